"""Upstream answers larger than one gRPC message (Settings.grpc_message_bytes, from MAX_BODY_BYTES)
cannot cross the gateway's gRPC hop: they are a 502 `bad_upstream_response`, logged as such, not the
gateway's own 500 (grpc.aio refusing to send them) with a request log record saying 200."""

from __future__ import annotations

import os
import zlib

import grpc
import httpx
import orjson
import pytest

from aiproxy.sse import SSEDecoder
from aiproxy.testing.fake_openai import JSONReply, RawReply, StreamReply, completion, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
U = [{"role": "user", "content": "hi"}]
TOO_LARGE = "y" * (1536 * 1024)  # over the 1 MiB + 64 KiB message limit of this gateway
SMALL_ANSWER_LIMIT = 65536 + 1024 * 1024  # small_gateway's MAX_BODY_BYTES + 1 MiB: what one answer may hold


@pytest.fixture(scope="module")
def small_gateway(upstream, tmp_path_factory):
    env = {"MAX_BODY_BYTES": "65536"}
    with GatewayProcess(tmp_path_factory.mktemp("small"), upstream_url=upstream.base_url, env=env) as gw:
        yield gw


def _post(gateway, **body) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, timeout=20,
                      json={"model": "gpt-test", "messages": U, **body})


def test_answer_too_large_for_a_grpc_message_is_a_logged_502(small_gateway, fake):
    fake.push(JSONReply(completion(content=TOO_LARGE)))
    response = _post(small_gateway)
    assert response.status_code == 502, response.text[:300]
    assert response.json()["error"]["code"] == "bad_upstream_response"
    record = small_gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["error"]["code"] == "bad_upstream_response"

    fake.push(JSONReply(completion(content=TOO_LARGE)))
    with grpc.insecure_channel(small_gateway.grpc_target) as channel, pytest.raises(grpc.RpcError) as err:
        chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(
            chat_pb2.ChatCompletionRequest(model="gpt-test", messages=[{"role": "user", "content_text": "hi"}]),
            metadata=(("authorization", f"Bearer {CLIENT_KEY}"),))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "larger than" in err.value.details()


def test_stream_chunk_too_large_ends_the_stream_with_an_error_frame(small_gateway, fake):
    fake.push(StreamReply(text_chunks(["fine", TOO_LARGE], usage=False), per_event=True))
    response = _post(small_gateway, stream=True)
    *chunks, error, done = SSEDecoder().feed(response.content)
    assert [orjson.loads(c)["choices"][0]["delta"]["content"] for c in chunks] == ["", "fine"]
    assert orjson.loads(error)["error"]["code"] == "bad_upstream_response" and done == "[DONE]"
    record = small_gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["error"]["code"] == "bad_upstream_response"


def test_streamed_answer_larger_than_a_json_answer_may_be_ends_with_an_error_frame(small_gateway, fake):
    """Was: every chunk fit one message, so a stream that never ended was relayed on and on while the
    gateway kept all of it for the request log (an endless upstream stream: +30 MiB of RSS a second)."""
    piece = "z" * (256 * 1024)  # each chunk is well within the limit; twenty of them are not
    fake.push(StreamReply(text_chunks([piece] * 20, usage=False), per_event=True))
    response = _post(small_gateway, stream=True)
    events = SSEDecoder().feed(response.content)
    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert error["code"] == "bad_upstream_response" and "MAX_BODY_BYTES" in error["message"], error
    relayed = "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert 0 < len(relayed) <= SMALL_ANSWER_LIMIT
    record = small_gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["error"]["code"] == "bad_upstream_response"
    assert len(record["response"]["choices"][0]["message"]["content"]) < 20 * len(piece)  # read no further



def _reset_peak_rss(gateway) -> None:
    with open(f"/proc/{gateway.proc.pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak (VmHWM) starts again from the current RSS


def _peak_rss_kib(gateway) -> int:
    status = open(f"/proc/{gateway.proc.pid}/status").read()
    return int(status.split("VmHWM:")[1].split()[0])


def _gzip(payload_head: bytes, filler: bytes, size: int, wbits: int = 31) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [compressor.compress(payload_head)]
    parts += [compressor.compress(filler * (1024 * 1024 // len(filler))) for _ in range(size // (1024 * 1024))]
    return b"".join(parts) + compressor.flush()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the gateway's peak RSS from /proc")
@pytest.mark.parametrize("kind", ["json", "stream", "error", "deflate"])
def test_compressed_answer_is_inflated_only_up_to_the_limit(small_gateway, fake, kind):
    """A few hundred KiB of gzip that inflate to 400 MiB: the gateway stops at the limit without
    holding the inflated body (httpx inflated each network read whole, +600 MiB of memory)."""
    head = {"json": b'{"choices": [{"message": {"content": "', "stream": b'data: {"choices": [{"delta": {"content": "',
            "error": b'{"error": {"message": "', "deflate": b'{"choices": [{"message": {"content": "'}[kind]
    body = _gzip(head, b"y", 400 * 1024 * 1024, wbits=15 if kind == "deflate" else 31)
    assert len(body) < 1024 * 1024
    encoding = "deflate" if kind == "deflate" else "gzip"
    fake.push(RawReply(body, status=500 if kind == "error" else 200, headers={"Content-Encoding": encoding},
                       content_type="text/event-stream" if kind == "stream" else "application/json"))
    _reset_peak_rss(small_gateway)
    before = _peak_rss_kib(small_gateway)
    response = _post(small_gateway, stream=kind == "stream")
    assert response.status_code == (500 if kind == "error" else 502), response.text[:300]  # an error keeps its status
    if kind != "error":
        assert "larger than the gateway relays" in response.json()["error"]["message"]
    assert _peak_rss_kib(small_gateway) - before < 64 * 1024  # KiB


def test_compressed_answer_within_the_limit_is_relayed(small_gateway, fake):
    answer = completion(content="z" * 500_000)
    for wbits, encoding in ((31, "gzip"), (15, "deflate"), (-15, "deflate")):
        compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
        fake.push(RawReply(compressor.compress(orjson.dumps(answer)) + compressor.flush(),
                           headers={"Content-Encoding": encoding}))
        response = _post(small_gateway)
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "z" * 500_000
    chunks = text_chunks(["a" * 300_000, "b" * 300_000])
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    fake.push(RawReply(compressor.compress(StreamReply(chunks).payload()) + compressor.flush(),
                       headers={"Content-Encoding": "gzip"}, content_type="text/event-stream"))
    events = SSEDecoder().feed(_post(small_gateway, stream=True).content)
    assert events[-1] == "[DONE]"
    assert "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                   if orjson.loads(e)["choices"]) == "a" * 300_000 + "b" * 300_000


@pytest.mark.parametrize("method", ["CreateChatCompletion", "StreamChatCompletion"])
def test_a_grpc_request_over_max_body_bytes_is_refused_as_over_rest(small_gateway, fake, method):
    """REST refuses a body over MAX_BODY_BYTES with 413; a gRPC request up to MAX_BODY_BYTES + 1 MiB
    (the message limit, which leaves room for what surrounds a body) reached the upstream."""
    rid = f"grpc-too-large-{method}"
    request = chat_pb2.ChatCompletionRequest(model="gpt-test")
    request.messages.add(role="user", content_text="x" * 70_000)
    with grpc.insecure_channel(small_gateway.grpc_target) as channel, pytest.raises(grpc.RpcError) as err:
        answer = getattr(chat_pb2_grpc.ChatServiceStub(channel), method)(
            request, metadata=(("authorization", f"Bearer {CLIENT_KEY}"), ("x-request-id", rid)))
        list(answer) if method == "StreamChatCompletion" else None
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MAX_BODY_BYTES" in err.value.details() and "65536" in err.value.details()
    assert not fake.received
    record = small_gateway.wait_for_record(rid)
    assert (record["status_code"], record["error"]["code"]) == (413, "request_too_large")
    request.messages[0].content_text = "x" * 60_000  # within the limit: served
    with grpc.insecure_channel(small_gateway.grpc_target) as channel:
        answer = getattr(chat_pb2_grpc.ChatServiceStub(channel), method)(
            request, metadata=(("authorization", f"Bearer {CLIENT_KEY}"),))
        list(answer) if method == "StreamChatCompletion" else None


def test_a_gzip_compressed_grpc_request_is_served_and_limited_by_what_it_inflates_to(small_gateway, fake):
    """A client compressing its requests (grpc-encoding: gzip) is served; the size limits apply to the
    inflated message, and one that inflates far past them (~64 KiB of gzip, 64 MiB of message) is refused
    without the gateway inflating it."""
    metadata = (("authorization", f"Bearer {CLIENT_KEY}"),)
    with grpc.insecure_channel(small_gateway.grpc_target, compression=grpc.Compression.Gzip) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="x" * 60_000)
        fake.push(JSONReply(completion("served")))
        assert stub.CreateChatCompletion(request, metadata=metadata).choices[0].message.content_text == "served"
        assert orjson.loads(fake.received[0].body)["messages"][0]["content"] == "x" * 60_000
        request.messages[0].content_text = "x" * 70_000  # over MAX_BODY_BYTES, within the message limit
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateChatCompletion(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "MAX_BODY_BYTES" in err.value.details()
        request.messages[0].content_text = "x" * (64 * 1024 * 1024)
        _reset_peak_rss(small_gateway)
        before = _peak_rss_kib(small_gateway)
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateChatCompletion(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _peak_rss_kib(small_gateway) - before < 16 * 1024  # KiB
    assert len(fake.received) == 1
