"""The REST facade at the HTTP-protocol level, over raw sockets: requests aiohttp's own parser
refuses before any handler runs still get an OpenAI error body and an X-Request-ID."""

from __future__ import annotations

import socket
import time

import orjson
import pytest
from aiohttp.compression_utils import HAS_BROTLI

from aiproxy.httpapi.app import REQUEST_LINE_LIMIT
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess

KEY = CLIENT_KEY.encode()
AUTH_LINE = b"Authorization: Bearer " + KEY + b"\r\n"
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"


def exchange(gateway: GatewayProcess, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the gateway closes: status, headers (lower-case), body."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


UNPARSABLE = {
    "request line": b"GARBAGE\r\n\r\n",
    "method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "tls on the http port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "http version": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    "bare lf": b"GET /health HTTP/1.1\nHost: x\n\n",
    "request line too long": b"GET /v1/models?q=" + b"x" * REQUEST_LINE_LIMIT + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header line too long": CHAT + AUTH_LINE + b"X-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    "too many headers": CHAT + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    "missing host": b"GET /health HTTP/1.1\r\n\r\n",
    "header name not ascii": "GET /health HTTP/1.1\r\nHost: x\r\nX-Ñ: 1\r\n\r\n".encode(),
    "nul in the authorization header": CHAT + b"Authorization: Bearer " + KEY + b"\x00\r\nContent-Length: 2\r\n\r\n{}",
    "space before colon": b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
    "invalid content-length": CHAT + AUTH_LINE + b"Content-Length: 2x\r\n\r\n{}",
    "negative content-length": CHAT + AUTH_LINE + b"Content-Length: -1\r\n\r\n{}",
    "duplicate content-length": CHAT + AUTH_LINE + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "unsupported transfer-encoding": CHAT + AUTH_LINE + b"Transfer-Encoding: gzip\r\n\r\n{}",
    "transfer-encoding with content-length": CHAT + AUTH_LINE
    + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}",
    "bad chunk size": CHAT + AUTH_LINE + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("data", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_requests_aiohttp_cannot_parse_get_openai_errors(gateway, openai_schemas, data):
    """Was: aiohttp's own plain-text 400 quoting the offending bytes (a key among them), without
    X-Request-ID and with aiohttp's versioned Server header."""
    status, headers, body = exchange(gateway, data)
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)
    openai_schemas.validate("ErrorResponse", error)
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("The request is not valid HTTP")
    assert headers["x-request-id"].startswith("req_")
    assert headers["server"] == "aiproxy"  # and the connection is closed: exchange() read to its end
    assert KEY not in body and b"xxxxxxxx" not in body and b"aaaaaaaa" not in body  # no bytes quoted back


@pytest.mark.parametrize("head", [
    CHAT + AUTH_LINE + b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n",
    b"GET /nothing HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n",
    b"DELETE /v1/models HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n",
], ids=["chat", "models", "unknown path", "wrong method"])
def test_an_expectation_other_than_100_continue_is_an_openai_417(gateway, openai_schemas, head):
    """Was: aiohttp's expect handler runs before the middlewares, so its 417 was plain text."""
    status, headers, body = exchange(gateway, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
    assert status == 417 and headers["content-type"] == "application/json"
    error = orjson.loads(body)
    openai_schemas.validate("ErrorResponse", error)
    assert "100-continue" in error["error"]["message"] and headers["x-request-id"]


def test_a_refused_expectation_carries_the_cors_headers(gateway):
    """Was: the route's expect handler runs before the middlewares, where the CORS middleware chose the
    request's Access-Control-Allow-Origin, so a browser could not read the 417 every other error can."""
    head = CHAT + AUTH_LINE + b"Origin: https://app.example\r\nX-Request-ID: expect-cors-1\r\n" \
        b"Expect: 200-ok\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    status, headers, _ = exchange(gateway, head)
    assert status == 417 and headers["x-request-id"] == "expect-cors-1"
    assert headers["access-control-allow-origin"] == "*"
    assert "X-Request-ID" in headers["access-control-expose-headers"]


@pytest.mark.parametrize("bad_chunk", [b"zz\r\n{}\r\n0\r\n\r\n", b"4\r\nHello\r\n0\r\n\r\n"], ids=["size", "size mismatch"])
def test_broken_chunking_after_the_head_is_a_prompt_logged_400(gateway, openai_schemas, bad_chunk):
    """Was: aiohttp's C parser raised on the broken chunk without telling the body's reader, so the
    handler waited for the rest of the body until REQUEST_BODY_TIMEOUT_SECONDS (60 s) and answered
    408 "did not arrive"; the 400 aiohttp queued was never sent."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(CHAT + AUTH_LINE + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n")
        time.sleep(0.3)  # the handler is reading the body
        sock.sendall(bad_chunk)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), received
    assert time.monotonic() - started < 5
    error = orjson.loads(body)
    openai_schemas.validate("ErrorResponse", error)
    assert "chunk" in error["error"]["message"] and b"Hello" not in body
    request_id = next(line.split(b": ")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"x-request-id"))
    assert gateway.wait_for_record(request_id.decode())["status_code"] == 400


@pytest.mark.skipif(HAS_BROTLI, reason="aiohttp decodes br where Brotli is installed")
def test_a_content_encoding_the_gateway_cannot_decode_is_named_without_install_hints(gateway, openai_schemas):
    """Was: "The request is not valid HTTP/1.1 (... Please install `Brotli`)": a valid request, and
    advice for the operator's Python environment given to the client."""
    status, headers, body = exchange(gateway, CHAT + AUTH_LINE + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}")
    assert status == 400 and headers["x-request-id"]
    error = orjson.loads(body)
    openai_schemas.validate("ErrorResponse", error)
    assert error["error"]["message"] == ("The request body's Content-Encoding is not one this gateway decodes; "
                                         "send it uncompressed, or as gzip or deflate.")


def test_a_stream_to_an_http_1_0_keep_alive_client_ends_with_the_connection(gateway):
    """Was: HTTP/1.0 has no chunking, so a stream's end is the connection's close; aiohttp sent no
    `Connection: keep-alive` yet kept the connection open (REQUEST_BODY_TIMEOUT_SECONDS, 60 s), so the
    client saw no end after [DONE], and a next request's response was glued onto the stream's body."""
    body = orjson.dumps({"model": "mock", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    request = (b"POST /v1/chat/completions HTTP/1.0\r\nConnection: keep-alive\r\n" + AUTH_LINE
               + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(request + b"GET /health HTTP/1.0\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, stream = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") and b"keep-alive" not in head.lower()
    assert stream.endswith(b"data: [DONE]\n\n"), stream[-200:]
