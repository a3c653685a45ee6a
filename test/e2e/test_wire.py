"""Raw HTTP against the gateway: lossless forwarding, SSE framing at every byte boundary,
request ids, CORS, and OpenAI error bodies for every malformed request."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from aiproxy.sse import Comment, SSEDecoder
from aiproxy.testing.fake_openai import (
    EndlessReply,
    JSONReply,
    RawReply,
    SSEComment,
    StreamReply,
    completion,
    text_chunks,
)
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.jsoncompare import strict_equal

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
U = [{"role": "user", "content": "hi"}]

# Varied bodies a client may send; each must reach the upstream identical except `model`.
LOSSLESS_BODIES = [
    {"messages": U},
    {"messages": [{"role": "system", "content": "terse"}, {"role": "developer", "content": "be nice"}, *U]},
    {"messages": U, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "n": 2, "seed": 42},
    {"messages": U, "temperature": 1, "presence_penalty": -0.5, "frequency_penalty": 1.25},
    {"messages": U, "stop": "\n\n"},
    {"messages": U, "stop": ["END", "STOP"]},
    {"messages": U, "max_completion_tokens": 9007199254740991, "logprobs": True, "top_logprobs": 5},
    {"messages": U, "logit_bias": {"50256": -100, "1234": 5}},
    {"messages": U, "user": "user-1", "metadata": {"tenant": "acme", "run": "7"}},
    {"messages": U, "response_format": {"type": "json_object"}},
    {"messages": U, "response_format": {"type": "text"}},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf",
                                                                        "file_data": "data:application/pdf;base64,JVBER"}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                         "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]}]},
    {"messages": U, "tool_choice": "required", "parallel_tool_calls": False,
     "tools": [{"type": "function", "function": {"name": "f", "strict": True,
                                                 "parameters": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0}}}}}]},
    {"messages": U, "tool_choice": {"type": "function", "function": {"name": "f"}}, "tools": []},
    {"messages": U, "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
    {"messages": U, "provider": {"order": ["openai", "azure"], "allow_fallbacks": False}, "models": ["a", "b"],
     "route": "fallback", "transforms": ["middle-out"], "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1},
    {"messages": U, "reasoning": {"effort": "high", "exclude": True}, "reasoning_effort": "low", "verbosity": "low"},
    {"messages": U, "seed": None, "temperature": None, "stop": None, "user": None},
    {"messages": U, "n": "2", "temperature": "0.5", "max_tokens": 1.5},
    {"messages": [{"role": "user", "name": "alice", "content": "héllo ✓ 漢字 \u0000 \"quotes\" {braces}"}]},
    {"messages": [{"role": "assistant", "content": "", "refusal": "no", "reasoning_details": [{"type": "reasoning.text", "text": "t"}]}, *U]},
    {"messages": U, "stream_options": None, "service_tier": "flex", "store": False, "modalities": ["text"],
     "prediction": {"type": "content", "content": "x"}, "web_search_options": {}, "safety_identifier": "s",
     "prompt_cache_key": "k", "audio": {"voice": "alloy", "format": "mp3"}},
    {"messages": U, "max": 2**63 - 1, "neg": -(2**63), "float_exp": 1e-7, "nested": {"list": [1, 1.5, None, True, "x", []]}},
    {"messages": [{"role": "user", "content": "order 123456789012345678901234567890"}], "seed": 2**64 - 1},
]


@pytest.mark.parametrize("body", LOSSLESS_BODIES, ids=range(len(LOSSLESS_BODIES)))
def test_request_reaches_upstream_losslessly(gateway, fake, body):
    sent = {"model": "gpt-test", **body}
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, content=orjson.dumps(sent), timeout=10)
    assert response.status_code == 200, response.text
    upstream = orjson.loads(fake.received[0].body)
    assert upstream.pop("model") == "openai/gpt-4o"
    sent.pop("model")
    assert strict_equal(upstream, sent), (upstream, sent)


def test_stream_split_at_every_byte_boundary(gateway, fake):
    events = text_chunks(["Zwölf", " Boxkämpfer", " jagen", " 🐍", " quer"], model="m")
    payload = StreamReply(events).payload()
    expected = [orjson.loads(orjson.dumps(e)) for e in events]
    body = orjson.dumps({"model": "gpt-test", "messages": U, "stream": True, "stream_options": {"include_usage": True}})
    with httpx.Client(base_url=gateway.base_url, headers=AUTH, timeout=10) as http:
        for cut in [*range(1, len(payload)), None]:
            # One stream cut at each single offset, then one stream sent a byte per write.
            splits = [cut] if cut else list(range(1, len(payload)))
            fake.push(StreamReply(events, splits=splits))
            response = http.post("/chat/completions", content=body)
            assert response.status_code == 200
            assert response.content.endswith(b"data: [DONE]\n\n")
            decoder = SSEDecoder()
            datas = decoder.feed(response.content)
            assert datas[-1] == "[DONE]"
            got = [orjson.loads(d) for d in datas[:-1]]
            assert got == expected, f"cut at {cut}"
            assert response.content.count(b"\n\n") == len(events) + 1


def test_events_that_arrive_in_one_read_are_all_in_the_request_log(gateway, fake):
    """Seed §11.3: when one network chunk carried several SSE events, the logged answer kept only
    part of them. Here the whole stream, [DONE] included, reaches the gateway in a single write."""
    fake.push(StreamReply(text_chunks(["Zwölf", " Boxkämpfer", " jagen"])))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    assert response.status_code == 200 and response.content.endswith(b"data: [DONE]\n\n")
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 200 and record["finish_reason"] == "stop"
    assert record["response"]["choices"][0]["message"]["content"] == "Zwölf Boxkämpfer jagen"
    assert record["usage"]["completion_tokens"] == 3  # the last event of the read, too

def test_request_id_is_echoed_and_logged(gateway, fake):
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers={**AUTH, "X-Request-ID": "trace-123"},
                          json={"model": "gpt-test", "messages": U})
    assert response.headers["x-request-id"] == "trace-123"
    assert gateway.wait_for_record("trace-123")["status_code"] == 200
    health = httpx.get(f"{gateway.root_url}/health").headers
    assert health["x-request-id"].startswith("req_")
    assert health["server"] == "aiproxy" and response.headers["server"] == "aiproxy"  # no version numbers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_record_keeps_the_alias_the_client_sent(gateway, fake, stream):
    """Seed §11.2: the router rewrote the shared request dict, so the log's original model (and
    its request body) showed the mapped model. Only the upstream gets the mapped name."""
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": stream})
    assert response.status_code == 200
    assert fake.received[-1].json["model"] == "openai/gpt-4o"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert (record["model_original"], record["request"]["model"], record["model_mapped"]) == (
        "gpt-test", "gpt-test", "openai/gpt-4o")

@pytest.mark.parametrize("given", ["é日本".encode(), b"tab\there", b"x" * 129])
def test_unusable_request_ids_are_replaced(gateway, fake, given):
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=[*AUTH.items(), ("X-Request-ID", given)],
                          json={"model": "gpt-test", "messages": U})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    assert gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 200


@pytest.mark.parametrize("authorization", [b"Bearer\t" + CLIENT_KEY.encode(), "Bearer ключ".encode(), b"Bearer \xff\xfe"])
def test_unreadable_authorization_is_401(gateway, openai_schemas, authorization):
    for method, path in (("POST", "/chat/completions"), ("GET", "/models"), ("GET", "/models/mock"),
                         ("GET", "/logs/requests")):
        response = httpx.request(method, gateway.base_url + path, headers=[("Authorization", authorization)],
                                 json={"model": "gpt-test", "messages": U} if method == "POST" else None)
        assert response.status_code == 401, (path, response.text)
        body = response.json()
        openai_schemas.validate("ErrorResponse", body)
        assert body["error"]["code"] == "invalid_api_key" and response.headers["www-authenticate"].startswith("Bearer")
        assert "ключ" not in response.text and CLIENT_KEY not in response.text


def test_health_and_ready(gateway):
    health = httpx.get(f"{gateway.root_url}/health").json()
    assert health["status"] == "ok" and health["version"]
    assert httpx.get(f"{gateway.root_url}/ready").json() == {"status": "ready"}


def test_cors_preflight_and_headers(gateway):
    preflight = httpx.options(f"{gateway.base_url}/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers
    response = httpx.get(f"{gateway.base_url}/models", headers={"Origin": "https://app.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "X-Request-ID" in response.headers["access-control-expose-headers"]


def test_cors_responses_say_what_a_cache_may_share(gateway, fake, tmp_path):
    """The Fetch standard's "CORS protocol and HTTP caches": a listed origin's answer depends on the
    request's Origin, so every answer must carry `Vary: Origin`, also one without Access-Control-Allow-Origin
    (no Origin, or one not listed). Was: only the listed origin's answer did, so a cache kept the other
    one and served it, without the header, to the listed origin. With `*` every answer carries
    `Access-Control-Allow-Origin: *`, Origin or not, and no Vary (was: none without an Origin)."""
    for headers in ({}, {"Origin": "https://other.example"}):
        response = httpx.get(f"{gateway.base_url}/models", headers=headers)
        assert response.headers.get("access-control-allow-origin") == "*", headers
        assert "vary" not in response.headers
    with GatewayProcess(tmp_path, upstream_url=fake.base_url,
                        env={"CORS_ALLOW_ORIGINS": "https://app.example"}) as gw:
        for headers, allowed in (({}, None), ({"Origin": "https://other.example"}, None),
                                 ({"Origin": "https://app.example"}, "https://app.example")):
            for response in (httpx.get(f"{gw.base_url}/models", headers=headers),
                             httpx.post(f"{gw.base_url}/chat/completions", headers={**AUTH, **headers}, content=b"{")):
                assert response.headers.get("access-control-allow-origin") == allowed, headers
                assert response.headers.get("vary") == "Origin", headers
        # A preflight from an origin not listed is refused as such, not as a method the path lacks.
        refused = httpx.options(f"{gw.base_url}/chat/completions", headers={
            "Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 403, refused.text
        assert "access-control-allow-origin" not in refused.headers and refused.headers["vary"] == "Origin"
        error = refused.json()["error"]
        assert error["code"] == "cors_origin_not_allowed" and "https://other.example" in error["message"]


def test_cors_exposes_every_rate_limit_header_the_gateway_forwards(gateway, fake):
    """A browser client reads only exposed headers: `retry-after-ms` (which the OpenAI SDKs read first)
    and OpenRouter's `X-RateLimit-*` names were forwarded but hidden from it."""
    forwarded = {"retry-after": "2", "retry-after-ms": "1500", "x-should-retry": "false", "x-ratelimit-limit": "20",
                 "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000000000"}
    fake.push(JSONReply({"error": {"code": 429, "message": "Rate limit exceeded"}}, status=429, headers=forwarded))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers={**AUTH, "Origin": "https://app.example"},
                          json={"model": "gpt-test", "messages": U})
    assert response.status_code == 429
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    for name, value in forwarded.items():
        assert response.headers[name] == value and name in exposed, name


@pytest.mark.parametrize(
    ("content", "status", "param"),
    [
        (b"{bad json", 400, None),
        (b"[1, 2]", 400, None),
        (b'"just a string"', 400, None),
        # Integers beyond 64 bits: orjson reads them as floats, which used to reach the upstream silently.
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "seed": 123456789012345678901234567890}',
         400, None),
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "v": [-9223372036854775809]}',
         400, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (b'{"model": "gpt-test"}', 400, "messages"),
        (b'{"model": "gpt-test", "messages": "hello"}', 400, "messages"),
        (b'{"model": "gpt-test", "messages": []}', 400, "messages"),
        (b'{"model": "gpt-test", "messages": [{"content": "x"}]}', 400, "messages[0].role"),
        (b'{"model": "gpt-test", "messages": ["x"]}', 400, "messages[0]"),
        # A role of a type that cannot be looked up (an object, a list): was a 500 and a traceback.
        (b'{"model": "gpt-test", "messages": [{"role": {"audio": "x"}, "content": "x"}]}', 400, "messages[0].role"),
        (b'{"model": "gpt-test", "messages": [{"role": ["user"], "content": "x"}]}', 400, "messages[0].role"),
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "stream"),
        (b'{"model": "missing-model", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
        # Nesting orjson parses but cannot write back (255..1024 levels), at the top and inside a message.
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 500 + b"]" * 500 + b"}",
         400, None),
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x", "x": ' + b"[" * 300 + b"]" * 300 + b"}]}",
         400, None),
        # Writable on its own (252 levels) but not once inside the message list: refused where it is sent.
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "x", "x": ' + b"[" * 252 + b"]" * 252 + b"}]}",
         400, None),
    ],
)
def test_malformed_requests_get_openai_errors(gateway, openai_schemas, content, status, param):
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, content=content)
    assert response.status_code == status, response.text
    body = response.json()
    openai_schemas.validate("ErrorResponse", body)
    assert body["error"]["param"] == param
    assert "Traceback" not in response.text and "detail" not in body
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == status


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_body_that_does_not_decompress_is_a_logged_400(gateway, fake, openai_schemas, encoding):
    """Was: a 500 "internal error" (and an app-log traceback) for a body its Content-Encoding could
    not decode, and no request log record. Valid compressed bodies are decoded and forwarded."""
    import gzip
    import zlib

    body = orjson.dumps({"model": "gpt-test", "messages": U})
    compress = gzip.compress if encoding == "gzip" else zlib.compress
    valid = httpx.post(f"{gateway.base_url}/chat/completions", content=compress(body),
                       headers={**AUTH, "Content-Encoding": encoding, "Content-Type": "application/json"})
    assert valid.status_code == 200 and fake.received[-1].json["messages"] == U
    response = httpx.post(f"{gateway.base_url}/chat/completions", content=b"not " + encoding.encode(),
                          headers={**AUTH, "Content-Encoding": encoding, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    assert encoding in response.json()["error"]["message"]
    assert gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 400


def test_bad_auth_is_logged_and_shaped(gateway, openai_schemas):
    for headers, message in [({}, "Missing Authorization header"),
                             ({"Authorization": "token"}, "Invalid Authorization header format"),
                             ({"Authorization": "Basic abc"}, "Invalid Authorization scheme"),
                             ({"Authorization": "Bearer nope"}, "Invalid or missing API Key")]:
        response = httpx.post(f"{gateway.base_url}/chat/completions", headers=headers,
                              json={"model": "gpt-test", "messages": U})
        assert response.status_code == 401
        assert response.json()["error"]["message"].startswith(message)
        assert response.headers["www-authenticate"].startswith("Bearer")
        openai_schemas.validate("ErrorResponse", response.json())
        record = gateway.wait_for_record(response.headers["x-request-id"])
        # Without a key nobody writes to the request log (up to MAX_BODY_BYTES a request, into the
        # disk and the search index): the refusal is recorded, its body is not.
        assert record["status_code"] == 401 and record["request"] is None and record["model_original"] is None
    # An unauthenticated client learns nothing about its body: 401 comes before 400.
    assert httpx.post(f"{gateway.base_url}/chat/completions", content=b"{bad").status_code == 401


def test_unknown_paths_and_methods(gateway, openai_schemas):
    missing = httpx.get(f"{gateway.root_url}/nothing")
    assert missing.status_code == 404
    openai_schemas.validate("ErrorResponse", missing.json())
    assert "serves the OpenAI API under /v1" in missing.json()["error"]["message"]
    # An OpenAI endpoint the gateway does not serve says so, rather than "use /v1", which it did
    embeddings = httpx.post(f"{gateway.base_url}/embeddings", headers=AUTH, json={"model": "m", "input": "x"})
    assert embeddings.status_code == 404
    openai_schemas.validate("ErrorResponse", embeddings.json())
    assert embeddings.json()["error"]["message"].startswith("This gateway does not serve /v1/embeddings: ")
    wrong = httpx.get(f"{gateway.base_url}/chat/completions")
    assert wrong.status_code == 405
    openai_schemas.validate("ErrorResponse", wrong.json())


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/v1/chat/completions", {"POST"}),
    ("DELETE", "/v1/models", {"GET", "HEAD"}),
    ("POST", "/v1/models/gpt-test", {"GET", "HEAD"}),
    ("PUT", "/health", {"GET", "HEAD"}),
])
def test_wrong_method_is_405_naming_the_allowed_ones(gateway, openai_schemas, method, path, allowed):
    """RFC 9110 §15.5.6: a 405 must carry `Allow`, which the OpenAI-shaped error body used to drop."""
    response = httpx.request(method, f"{gateway.root_url}{path}", headers=AUTH)
    assert response.status_code == 405
    openai_schemas.validate("ErrorResponse", response.json())
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


def test_models_are_public_by_default(gateway):
    assert httpx.get(f"{gateway.base_url}/models").status_code == 200
    assert httpx.get(f"{gateway.base_url}/models", headers={"Authorization": "Bearer bad"}).status_code == 401


def test_models_require_a_key_when_configured(fake, tmp_path, openai_schemas):
    """Seed §11 Security: /v1/models was public with no way to close it. It stays public by default
    (docs/architecture.md), and MODELS_REQUIRE_AUTH=true closes the list and each model's page."""
    from aiproxy.testing.gateway import GatewayProcess

    with GatewayProcess(tmp_path, upstream_url=fake.base_url, env={"MODELS_REQUIRE_AUTH": "true"}) as gw:
        for path in ("/models", "/models/gpt-test"):
            refused = httpx.get(f"{gw.base_url}{path}")
            assert refused.status_code == 401, path
            openai_schemas.validate("ErrorResponse", refused.json())
            assert httpx.get(f"{gw.base_url}{path}", headers=AUTH).status_code == 200, path
        assert httpx.get(f"{gw.root_url}/health").status_code == 200  # liveness stays public


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/v1/openapi.json", "/docs/oauth2-redirect"])
def test_the_seeds_public_api_pages_are_not_served(gateway, openai_schemas, path):
    """Seed §11 Security: FastAPI's /docs, /redoc and /openapi.json were public (docs/architecture.md:
    gone on purpose). With or without a key they are unknown paths."""
    for headers in ({}, AUTH):
        response = httpx.get(f"{gateway.root_url}{path}", headers=headers)
        assert response.status_code == 404, (path, response.text)
        openai_schemas.validate("ErrorResponse", response.json())


def test_no_secret_in_any_log_file(gateway, fake):
    from aiproxy.testing.gateway import ADMIN_KEY, UPSTREAM_KEYS

    httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "gpt-test", "messages": U})
    httpx.post(f"{gateway.base_url}/chat/completions", headers={"Authorization": "Bearer sk-wrong-guess-123"},
               json={"model": "gpt-test", "messages": U})
    logged = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "nokey-test", "messages": U})
    gateway.wait_for_record(logged.headers["x-request-id"])  # the request log is written by a background thread
    secrets = [CLIENT_KEY, ADMIN_KEY, "sk-wrong-guess-123", *UPSTREAM_KEYS.values()]
    files = [p for p in gateway.log_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:6]}… leaked into {path}"



def test_client_model_names_never_name_files_and_each_prompt_is_logged_once(gateway, fake):
    """Seed §11 Security: a client's model name became a log file name, its handler cached for
    good (files and descriptors without bound), and every prompt was written up to five times
    (app.log, endpoint log, two model logs, stdout). Here names never reach the file system: the
    gateway holds the same few log files open, and a prompt is in its one request record only."""
    marker = f"needle-{uuid.uuid4().hex}"
    models = ["pattern-../../escape", "pattern-a/b\\c", "pattern-" + "x" * 300, "../unknown-model", "no/such/model",
              *(f"pattern-m{i}" for i in range(30))]
    for i, model in enumerate(models):
        response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                              json={"model": model, "messages": [{"role": "user", "content": f"{marker} {i}"}]})
        assert response.status_code in (200, 404), response.text
    gateway.wait_for_record(response.headers["x-request-id"])
    log_dir = gateway.log_dir.resolve()
    files = [p for p in log_dir.rglob("*") if p.is_file() and "db" not in p.relative_to(log_dir).parts]
    for path in files:
        name = path.relative_to(log_dir).as_posix()
        assert re.fullmatch(r"\.key_hash_secret|app(\.[0-9_TZ-]+)?\.log|requests/requests-\d{8}-\d+\.jsonl", name), name
    held = {os.readlink(fd) for fd in Path(f"/proc/{gateway.proc.pid}/fd").iterdir() if fd.exists()}
    held = {f for f in held if f.startswith(str(log_dir)) and "/db/" not in f}
    assert len(held) <= 2, held  # app.log and today's request log
    found = {path.relative_to(log_dir).as_posix(): path.read_bytes().count(marker.encode()) for path in files}
    assert sum(found.values()) == len(models), found
    assert all(count == 0 or name.startswith("requests/") for name, count in found.items()), found
    assert marker.encode() not in gateway.stderr_path.read_bytes()

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_provider_key_quoted_by_an_upstream_error_is_redacted(gateway, fake, stream):
    """An upstream (or a proxy before it) that quotes the request's Authorization header in its
    error message must not hand the gateway's provider key to the client and the request log."""
    from aiproxy.testing.gateway import UPSTREAM_KEYS

    key = UPSTREAM_KEYS["OPENROUTER_API_KEY"]
    error = {"code": 400, "message": f"Unsupported header Authorization: Bearer {key}"}
    fake.push(StreamReply([{**text_chunks([], usage=False)[0], "error": error}]) if stream
              else JSONReply({"error": error}, status=400))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": stream})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Unsupported header Authorization: Bearer [redacted]"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert key not in orjson.dumps(record).decode()


@pytest.mark.parametrize("value", ["1s\t500ms", "caf\u00e9", "9" * 300], ids=["tab", "non-ascii", "long"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_rate_limit_header_metadata_cannot_carry_stays_behind(gateway, fake, value, stream):
    """A header value gRPC metadata cannot hold, or too many of them, made the whole answer the
    gateway's own 500."""
    headers = {"X-RateLimit-Reset-Tokens": value, "X-RateLimit-Remaining-Tokens": "7",
               **{f"X-RateLimit-Extra-{i}": "x" * 200 for i in range(60)}}
    fake.push(StreamReply(text_chunks(["ok"]), headers=headers) if stream else JSONReply(completion(), headers=headers),
              JSONReply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "2", **headers}))
    for status in (200, 429):
        response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                              json={"model": "gpt-test", "messages": U, "stream": stream and status == 200})
        assert response.status_code == status, response.text
        assert "x-ratelimit-reset-tokens" not in response.headers
        assert response.headers["x-ratelimit-remaining-tokens"] == "7"
        assert 0 < sum(len(k) + len(v) for k, v in response.headers.items() if k.startswith("x-ratelimit-")) <= 4096

def test_huge_error_messages_keep_their_status(gateway, fake, openai_schemas):
    """Messages beyond gRPC's 16 KiB metadata limit are clipped, not turned into a retryable 429."""
    fake.push(JSONReply({"error": {"message": "e" * 30_000, "type": "invalid_request_error"}}, status=400))
    upstream = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "gpt-test", "messages": U})
    unknown = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "m" * 20_000, "messages": U})
    path = httpx.get(f"{gateway.base_url}/models/{'x' * 7000}")
    for response, status in ((upstream, 400), (unknown, 404), (path, 404)):
        assert response.status_code == status, response.text[:300]
        openai_schemas.validate("ErrorResponse", response.json())
        assert len(response.json()["error"]["message"]) < 4096
    assert upstream.json()["error"]["message"].endswith("…[truncated]")
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert "does not exist" in unknown.json()["error"]["message"]  # the quoted name is clipped, not the sentence



@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_endless_upstream_error_body_is_read_only_in_part(gateway, fake, openai_schemas, stream):
    """An error body is read up to a bound, not to its end: a huge one filled the gateway's memory
    (200 MB of error page: 1.6 GB resident), an endless one held the call until the read timeout."""
    fake.push(EndlessReply(status=503))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, timeout=20,
                          json={"model": "gpt-test", "messages": U, "stream": stream})
    assert response.status_code == 503, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    assert response.json()["error"]["message"] == "The upstream provider 'openrouter' answered HTTP 503."
    fake.wait_cancelled()


ENDLESS_ANSWERS = {
    "json": EndlessReply(status=200, head=b'{"id": "c1", "object": "chat.completion", "choices": [{"message": {"content": "'),
    "stream": EndlessReply(status=200, head=b'data: {"choices": [{"index": 0, "delta": {"content": "',
                           content_type="text/event-stream"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_endless_upstream_answer_is_refused_at_the_relay_limit(gateway, fake, openai_schemas, stream):
    """A 200 answer (or one stream event) that never ends was read on without bound: the gateway's
    memory grew until the upstream stopped. Nothing over one gRPC message can be relayed, so reading
    stops there (MAX_BODY_BYTES + 1 MiB) with a 502 saying so."""
    fake.push(ENDLESS_ANSWERS["stream" if stream else "json"])
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "gpt-test", "messages": U, "stream": stream})
    assert response.status_code == 502, response.text  # nothing was sent before: a real status
    openai_schemas.validate("ErrorResponse", response.json())
    assert response.json()["error"]["message"] == (
        f"The upstream provider 'openrouter' sent an answer larger than the gateway relays ({21 * 1024 * 1024} bytes "
        "per message; the operator sets it with MAX_BODY_BYTES).")
    fake.wait_cancelled()
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["error"]["code"] == "bad_upstream_response"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_redirect_names_the_base_url(gateway, fake, openai_schemas, stream):
    """A redirect (an http base_url for an https server, a moved path) was 'returned an empty body'
    (or, streamed, 'no content type'): nothing told the operator where to look."""
    fake.push(RawReply(b"", status=301, headers={"Location": "https://elsewhere.test/v1/chat/completions"}))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": stream})
    assert response.status_code == 502, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    error = response.json()["error"]
    assert error["code"] == "bad_upstream_response" and "HTTP 301" in error["message"] and "base_url" in error["message"]
    assert "elsewhere.test" not in error["message"]


# Error bodies of OpenAI-compatible servers that are not OpenAI's {"error": {...}}: the message still
# reaches the client (it was replaced by "answered HTTP <status>").
ERROR_BODY_SHAPES = [
    ({"error": "model 'llama9' not found"}, 404, "model 'llama9' not found", "not_found_error"),
    ({"error": "Provider returned error"}, 502, "Provider returned error", "server_error"),
    ({"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "param": None,
      "code": 404}, 404, "The model `x` does not exist.", "NotFoundError"),
    # FastAPI's own error body, which many self-hosted servers (Xinference, LMDeploy…) answer with
    ({"detail": "Model not found in the model list, uid: qwen"}, 400, "Model not found in the model list, uid: qwen",
     "invalid_request_error"),
    ({"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]}, 422,
     '[{"type":"missing","loc":["body","messages"],"msg":"Field required"}]', "invalid_request_error"),
    # Mistral's 422: the message is an object
    ({"object": "error", "message": {"detail": [{"loc": ["body", "n"], "msg": "Input should be 1"}]},
      "type": "invalid_request_message_error", "param": None, "code": None}, 422,
     '{"detail":[{"loc":["body","n"],"msg":"Input should be 1"}]}', "invalid_request_message_error"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream_body, status, message, error_type", ERROR_BODY_SHAPES,
                         ids=["bare-string", "bare-string-5xx", "vllm-unwrapped", "fastapi-detail",
                              "fastapi-validation", "mistral-object-message"])
def test_upstream_error_body_shapes_keep_their_message(gateway, fake, openai_schemas, upstream_body, status,
                                                       message, error_type, stream):
    fake.push(JSONReply(upstream_body, status=status))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "local-test", "messages": U, "stream": stream})
    assert response.status_code == status, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    assert (response.json()["error"]["message"], response.json()["error"]["type"]) == (message, error_type)


# OpenRouter's answer when the provider behind it failed: a generic message, the provider's own reason
# in `metadata.raw` (a JSON error body or plain text), the provider in `metadata.provider_name`.
PROVIDER_ERRORS = [
    ({"message": "Provider returned error", "code": 400, "metadata": {
        "raw": orjson.dumps({"error": {"message": "Model supports at most 1 image per prompt.",
                                       "type": "invalid_request_error"}}).decode(),
        "provider_name": "Crucible"}}, 400,
     "Provider returned error (Crucible: Model supports at most 1 image per prompt.)"),
    ({"message": "Provider returned error", "code": 429, "metadata": {
        "raw": "z-ai/glm is temporarily rate-limited upstream. Please retry shortly.", "provider_name": "BaseTen"}},
     429, "Provider returned error (BaseTen: z-ai/glm is temporarily rate-limited upstream. Please retry shortly.)"),
    ({"message": "Provider returned error", "code": 502, "metadata": {"raw": {"detail": "upstream crashed"}}}, 502,
     "Provider returned error (upstream crashed)"),
    # no message of its own: the reason is the message (was: "The upstream provider 'openrouter' answered HTTP 503.")
    ({"code": 503, "metadata": {"raw": "no capacity for this model", "provider_name": "Together"}}, 503,
     "Together: no capacity for this model"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream_error, status, message", PROVIDER_ERRORS,
                         ids=["json-raw", "text-raw", "object-raw", "raw-without-message"])
def test_openrouter_provider_error_keeps_the_providers_reason(gateway, fake, openai_schemas, upstream_error, status,
                                                              message, stream):
    """"Provider returned error" alone does not tell a bad request from a rate limit: the seed relayed
    OpenRouter's body verbatim, `metadata.raw` included; the normalised error keeps its reason."""
    fake.push(JSONReply({"error": upstream_error}, status=status))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": stream})
    assert response.status_code == status, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    assert response.json()["error"]["message"] == message

    fake.push(StreamReply([*text_chunks(["partial"], usage=False)[:2], {"error": upstream_error}], done=False))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    *_, error, done = _sse_payloads(response.content)
    assert error["error"]["message"] == message and done == "[DONE]"


# 200 answers that are not a chat completion: a 502 the client can act on, and always a record.
NOT_COMPLETIONS = [
    b'{"id":"x","object":"chat.completion","choices":5}',
    b'{"id":"x","object":"chat.completion","choices":null}',
    b'{"id":"x","object":"chat.completion"}',
    b"[1, 2]",
    b"{not json",
    b"",
]


@pytest.mark.parametrize("upstream_body", NOT_COMPLETIONS, ids=range(len(NOT_COMPLETIONS)))
def test_upstream_200_that_is_not_a_completion_is_a_logged_502(gateway, fake, openai_schemas, upstream_body):
    fake.push(RawReply(upstream_body))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "gpt-test", "messages": U})
    assert response.status_code == 502, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "bad_upstream_response")
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["error"]["code"] == "bad_upstream_response"


# OpenRouter answers some failures with a 200 whose body holds only `error`: the client gets the
# upstream's message, code and status (a numeric code), as for the same error inside a stream.
ERRORS_IN_200 = [
    ({"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min",
                "metadata": {"error_type": "rate_limit_exceeded"}}}, 429, "rate_limit_error", "rate_limit_exceeded"),
    ({"error": {"code": 400, "message": "This model's context is 8192 tokens"}}, 400, "invalid_request_error", None),
    ({"error": {"code": "overloaded", "message": "Provider overloaded"}}, 502, "server_error", "overloaded"),
    ({"error": "Provider returned error"}, 502, "server_error", None),
    ({"error": {"code": 402, "message": "Insufficient credits. Add more using https://openrouter.ai/credits",
                "metadata": {"error_type": "payment_required"}}}, 402, "insufficient_quota", "insufficient_quota"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream_body, status, error_type, code", ERRORS_IN_200, ids=range(len(ERRORS_IN_200)))
def test_upstream_200_with_only_an_error_keeps_its_message(gateway, fake, openai_schemas, upstream_body, status,
                                                           error_type, code, stream):
    """A stream request answered so (a JSON body, not an event stream) was a 502 saying only that."""
    fake.push(JSONReply(upstream_body, headers={"Retry-After": "4"}))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": stream})
    assert response.status_code == status, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    error = response.json()["error"]
    message = upstream_body["error"] if isinstance(upstream_body["error"], str) else upstream_body["error"]["message"]
    assert (error["message"], error["type"], error["code"]) == (message, error_type, code)
    assert response.headers["retry-after"] == "4"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == status and record["error"]["message"] == message


@pytest.mark.parametrize("answer", [
    b'{"choices":[],"deep":' + b"[" * 300 + b"]" * 300 + b"}",  # orjson writes 254 levels
    # 255 levels, most of them in the message's own extra_json: the facade's 500 was written
    b'{"choices":[{"index":0,"message":{"role":"assistant","deep":' + b"[" * 251 + b"]" * 251 + b"}}]}",
], ids=["top-level", "in-message"])
def test_upstream_answer_too_deep_to_relay_is_a_logged_502(gateway, fake, openai_schemas, answer):
    fake.push(RawReply(answer))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "gpt-test", "messages": U})
    assert response.status_code == 502
    openai_schemas.validate("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "bad_upstream_response"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["request"]["messages"] == U and record["response"] is None


def test_stream_chunk_too_deep_to_relay_is_an_error_frame(gateway, fake, openai_schemas):
    """A chunk nested 255 levels, most of them in its delta's extra_json, after one that went out: the
    facade failed on it with the stream started, writing its 500 into the chunked body."""
    first = text_chunks(["ok"], usage=False)[0]
    deep = '{"choices":[{"index":0,"delta":{"deep":' + "[" * 251 + "]" * 251 + "}}]}"  # more than orjson writes
    fake.push(StreamReply([first, deep], per_event=True))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    assert response.status_code == 200
    relayed, error_frame, done = _sse_payloads(response.content)
    assert relayed["choices"] == first["choices"] and done == "[DONE]"
    openai_schemas.validate("ErrorResponse", error_frame)
    assert error_frame["error"]["code"] == "bad_upstream_response"
    assert gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 502


def _sse_payloads(body: bytes) -> list:
    decoder = SSEDecoder()
    return [data if data == "[DONE]" else orjson.loads(data) for data in decoder.feed(body)]


PROCESSING = SSEComment("OPENROUTER PROCESSING")


def test_upstream_keepalive_comments_reach_the_client_as_they_come(gateway, fake):
    """OpenRouter sends `: OPENROUTER PROCESSING` while the model has not started. Forwarded at once,
    they keep the client, and any proxy on its way, from timing out the wait for the first token."""
    fake.push(StreamReply([PROCESSING, PROCESSING, *text_chunks(["late"], usage=False)], per_event=True, delay=0.5))
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", headers=AUTH,
                      json={"model": "gpt-test", "messages": U, "stream": True}, timeout=10) as response:
        assert response.status_code == 200  # committed by the first comment
        reads = response.iter_raw()
        first = next(reads)
        commented = time.monotonic()
        body = first
        for raw in reads:
            if b"data:" in raw and b"data:" not in body:
                first_token = time.monotonic()
            body += raw
    assert first == b": OPENROUTER PROCESSING\n\n"
    assert first_token - commented >= 0.4  # the comment did not wait for the answer (1 s later)
    events = SSEDecoder().feed(body)
    assert events[:2] == ["OPENROUTER PROCESSING"] * 2 and all(type(e) is Comment for e in events[:2])
    assert [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[2:-2]] == ["", "late"]
    assert events[-1] == "[DONE]"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["response"]["choices"][0]["message"]["content"] == "late"
    assert record["ttft_ms"] >= 900  # from the first chunk, not the first comment


def test_error_after_a_keepalive_comment_is_an_error_frame(gateway, fake, openai_schemas):
    """The comment committed the 200 (as OpenRouter's own answer had): a later error is the stream's
    error frame, and the request log keeps its status."""
    error = {"code": 429, "message": "Rate limit exceeded"}
    fake.push(StreamReply([PROCESSING, {**text_chunks([], usage=False)[0], "error": error}], per_event=True))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    assert response.status_code == 200
    comment, error_frame, done = SSEDecoder().feed(response.content)
    assert comment == "OPENROUTER PROCESSING" and done == "[DONE]"
    openai_schemas.validate("ErrorResponse", orjson.loads(error_frame))
    assert orjson.loads(error_frame)["error"]["message"] == "Rate limit exceeded"
    assert gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 429


@pytest.mark.parametrize("message", ['Model "openai/gpt-4o" is busy', 'back\\slash, {brace} and\nnewline'])
def test_a_mid_stream_error_message_with_quotes_is_a_valid_json_frame(gateway, fake, openai_schemas, message):
    """Seed §11.5: the error frame was formatted by hand, so a quote in the message made it invalid
    JSON, and the request was logged as 200. After a token has gone out, the error is one JSON frame
    carrying the message exactly, then [DONE], and the record keeps the upstream's status."""
    chunks = text_chunks(["partial"], usage=False)[:2]
    fake.push(StreamReply([*chunks, {**chunks[0], "error": {"code": 429, "message": message}}]))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    assert response.status_code == 200
    *relayed, error_frame, done = SSEDecoder().feed(response.content)
    assert [orjson.loads(c)["choices"][0]["delta"]["content"] for c in relayed] == ["", "partial"] and done == "[DONE]"
    error = orjson.loads(error_frame)  # valid JSON, whatever the message holds
    openai_schemas.validate("ErrorResponse", error)
    assert error["error"]["message"] == message
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 429 and record["error"]["message"] == message

def test_stream_closed_without_done_ends_with_an_error_frame(gateway, fake):
    # OpenAI and OpenRouter end every complete stream with [DONE]; this one stops after a token.
    fake.push(StreamReply(text_chunks(["partial"], usage=False)[:2], done=False))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    assert response.status_code == 200
    *chunks, error, done = _sse_payloads(response.content)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "partial"]
    assert error["error"]["code"] == "upstream_stream_truncated" and error["error"]["type"] == "server_error"
    assert done == "[DONE]"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["error"]["code"] == "upstream_stream_truncated"
    assert record["response"]["choices"][0]["message"]["content"] == "partial"


def test_stream_that_finished_without_done_is_complete(gateway, fake):
    """Some OpenAI-compatible servers stop after the finish_reason chunk: nothing is missing."""
    fake.push(StreamReply(text_chunks(["whole"], usage=False), done=False))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    *chunks, done = _sse_payloads(response.content)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"] and done == "[DONE]"
    assert gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 200


def test_done_with_text_after_the_marker_ends_the_stream(gateway, fake):
    """The OpenAI SDK ends a stream at any data that starts with [DONE] (wire-formats.md §1.5)."""
    fake.push(StreamReply([*text_chunks(["whole"], usage=False), "[DONE] (3 chunks)"], done=False))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    *chunks, done = _sse_payloads(response.content)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"] and done == "[DONE]"
    assert gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 200


def test_stream_with_a_choice_still_open_at_the_end_is_truncated(gateway, fake):
    """n=2: choice 0 finished, choice 1 was cut off, no [DONE]: not a finished answer."""
    def chunk(index, delta, finish=None):
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    fake.push(StreamReply([chunk(0, {"role": "assistant", "content": "a"}), chunk(1, {"role": "assistant", "content": "b"}),
                           chunk(0, {}, "stop")], done=False))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True, "n": 2})
    *_, error, done = _sse_payloads(response.content)
    assert error["error"]["code"] == "upstream_stream_truncated" and done == "[DONE]"



@pytest.mark.parametrize("choice_error, status, message", [
    ({"code": 502, "message": "Provider disconnected", "metadata": {"error_type": "provider_unavailable"}}, 502,
     "Provider disconnected"),
    ({"code": 429, "message": "Rate limit exceeded"}, 429, "Rate limit exceeded"),
    (None, 502, "The upstream provider 'openrouter' failed mid-answer."),
], ids=["choice-error", "numeric-status", "no-error-object"])
def test_choice_finished_with_error_is_an_error(gateway, fake, openai_schemas, choice_error, status, message):
    """OpenRouter ends a choice that failed partway with finish_reason "error" (OpenAI has no such
    reason), its `error` in the choice: relayed as a finished answer, the stream looked complete and
    was logged 200. Streamed, the client gets the tokens before it, then an error frame; unary, the error."""
    failed = {"index": 0, "finish_reason": "error", **({"error": choice_error} if choice_error else {})}
    chunks = text_chunks(["partial"], usage=False)[:2]
    chunks.append({**chunks[0], "choices": [{**failed, "delta": {"content": ""}}]})
    fake.push(StreamReply(chunks))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    *relayed, error, done = _sse_payloads(response.content)
    assert [c["choices"][0]["delta"]["content"] for c in relayed] == ["", "partial"] and done == "[DONE]"
    assert error["error"]["message"] == message
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == status and record["response"]["choices"][0]["message"]["content"] == "partial"

    fake.push(JSONReply(completion(choices=[{**failed, "message": {"role": "assistant", "content": "part"}}])))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "gpt-test", "messages": U})
    assert response.status_code == status, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    assert response.json()["error"]["message"] == message

def test_a_failed_choice_with_the_error_beside_the_choices_keeps_that_error(gateway, fake):
    """OpenRouter may put the error of a choice that ended with finish_reason "error" at the top level
    of the answer instead of in the choice: its status and message are the client's answer, not the
    generic "failed mid-answer" 502."""
    failed = {"index": 0, "finish_reason": "error", "message": {"role": "assistant", "content": "part"}}
    fake.push(JSONReply(completion(choices=[failed], error={"code": 429, "message": "Rate limit exceeded"})))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": "gpt-test", "messages": U})
    assert response.status_code == 429, response.text
    assert response.json()["error"]["message"] == "Rate limit exceeded"


@pytest.mark.parametrize("reply", [
    RawReply(b"{not json"),
    RawReply(b""),
    RawReply(orjson.dumps({"id": "x", "object": "chat.completion", "choices": []})),  # `stream` ignored
    RawReply(b"<html>bad gateway</html>", content_type="text/html"),
], ids=["not-json", "empty", "json-completion", "html"])
def test_stream_request_answered_without_an_event_stream_is_a_502(gateway, fake, openai_schemas, reply):
    fake.push(reply)
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    assert response.status_code == 502, response.text
    openai_schemas.validate("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "bad_upstream_response"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["status_code"] == 502 and record["error"]["code"] == "bad_upstream_response"


@pytest.mark.parametrize("model", ["pattern-nonexistent", "pattern-INVALID", "pattern-test-bad-1"])
def test_model_names_are_never_refused_for_what_they_contain(gateway, fake, model):
    """Seed §11.6: a test hook in the router refused any model whose name contained `nonexistent`,
    `invalid` or `test-bad` (and the 400 became a 500). A name the mappings match is served."""
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={"model": model, "messages": U})
    assert response.status_code == 200, response.text
    assert fake.received[-1].json["model"] == "openai/pattern"
    assert gateway.wait_for_record(response.headers["x-request-id"])["model_original"] == model

def test_seed_config_with_unprefixed_values_routes_to_openrouter(fake, tmp_path):
    # The seed's config.yml format: a value without "provider:" is an OpenRouter model id.
    from aiproxy.testing.gateway import GatewayProcess

    with GatewayProcess(tmp_path, upstream_url=fake.base_url,
                        mappings={"gpt-4": "openai/gpt-4", "claude-*": "anthropic/claude-3-haiku"}) as gw:
        for alias, upstream_model in (("gpt-4", "openai/gpt-4"), ("claude-3-x", "anthropic/claude-3-haiku")):
            response = httpx.post(f"{gw.base_url}/chat/completions", headers=AUTH, json={"model": alias, "messages": U})
            assert response.status_code == 200, response.text
            assert fake.received[-1].path == "/api/v1/chat/completions"  # OpenRouter's base URL
            assert fake.received[-1].json["model"] == upstream_model
        listed = httpx.get(f"{gw.base_url}/models").json()["data"]
        assert [(m["id"], m["owned_by"]) for m in listed] == [("gpt-4", "openrouter")]


def test_seed_style_quoted_provider_key_and_warn_level(fake, tmp_path):
    # `docker run --env-file` keeps the quotes of OPENROUTER_API_KEY="…"; LOG_LEVEL=WARN is Python's
    # spelling. The seed accepted both; the gateway must start and send the bare key upstream.
    from aiproxy.testing.gateway import GatewayProcess

    with GatewayProcess(tmp_path, upstream_url=fake.base_url,
                        env={"OPENROUTER_API_KEY": '"sk-or-v1-quoted-7c1e"', "LOG_LEVEL": "WARN"}) as gw:
        response = httpx.post(f"{gw.base_url}/chat/completions", headers=AUTH, json={"model": "gpt-test", "messages": U})
        assert response.status_code == 200, response.text
        assert fake.received[-1].headers["authorization"] == "Bearer sk-or-v1-quoted-7c1e"


@pytest.mark.parametrize("text", ["a\u2028b\u2029c", "form\x0cfeed\x0bvt", "seps\x1c\x1d\x1e\x85end", "nul\x00", "", "two\n\nblank"])
def test_keepalive_comment_text_is_forwarded_unchanged(gateway, fake, text):
    """Only a line end splits a comment: characters str.splitlines also breaks at (U+2028, form
    feed, \\x1c…) stay inside its line, and empty comment lines are kept."""
    raw = "".join(f":{line}\n" for line in text.split("\n")).encode() + b"\n"
    fake.push(RawReply(raw + StreamReply(text_chunks(["x"], usage=False)).payload(), content_type="text/event-stream"))
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True})
    assert response.status_code == 200
    comment = SSEDecoder().feed(response.content)[0]
    assert type(comment) is Comment and comment == text


@pytest.mark.parametrize("first", [True, False])
def test_stream_event_that_is_not_utf8_is_a_logged_502(gateway, fake, openai_schemas, first):
    """An upstream event whose bytes are not UTF-8 is a bad upstream answer (502), as one that is not
    JSON is: before the first event an HTTP 502, later an error frame after what came before it."""
    chunks = [] if first else text_chunks(["kept"], usage=False)[:2]
    body = StreamReply([PROCESSING, *chunks]).payload().removesuffix(b"data: [DONE]\n\n") + b"data: {\"x\": \"\xff\xfe\"}\n\n"
    fake.push(RawReply(body, content_type="text/event-stream"))
    request_id = f"not-utf8-{first}"
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers={**AUTH, "x-request-id": request_id},
                          json={"model": "gpt-test", "messages": U, "stream": True})
    record = gateway.wait_for_record(request_id)
    assert record["status_code"] == 502 and record["error"]["code"] == "bad_upstream_response"
    assert response.status_code == 200  # the comment committed it
    events = SSEDecoder().feed(response.content)
    assert events[0] == "OPENROUTER PROCESSING" and events[-1] == "[DONE]"
    error = orjson.loads(events[-2])
    openai_schemas.validate("ErrorResponse", error)
    assert error["error"]["code"] == "bad_upstream_response" and "not JSON" in error["error"]["message"]
    assert [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-2]] == ([] if first else ["", "kept"])


def test_a_comment_between_chunks_of_one_read_keeps_its_place(gateway, fake):
    """Chunks and comments that arrive in one network read leave in the upstream's order (a batch
    carries its comments ahead of its chunks, so a comment after a chunk starts the next batch)."""
    chunks = text_chunks(["one", "two"], usage=False)
    fake.push(StreamReply([chunks[0], chunks[1], PROCESSING, *chunks[2:]]))  # one write
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                          json={"model": "gpt-test", "messages": U, "stream": True}, timeout=10)
    events = SSEDecoder().feed(response.content)
    kinds = ["comment" if type(e) is Comment else e if e == "[DONE]" else
             orjson.loads(e)["choices"][0]["delta"].get("content") for e in events]
    assert kinds[:4] == ["", "one", "comment", "two"], kinds


def test_a_body_with_a_utf8_byte_order_mark_is_read(gateway, fake):
    """Was: 400 "UTF-8 byte order mark (BOM) is not supported"; RFC 8259 §8.1 lets parsers skip it."""
    body = "\ufeff".encode() + orjson.dumps({"model": "gpt-test", "messages": U})
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, content=body)
    assert response.status_code == 200, response.text
    assert fake.received[-1].json["messages"] == U


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_body_that_is_not_utf8_is_named_as_such(gateway, openai_schemas, encoding):
    """Was: orjson's "str is not valid UTF-8: surrogates not allowed", which names no cause a client can act on."""
    body = '{"model": "gpt-test", "messages": [{"role": "user", "content": "café"}]}'.encode(encoding)
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, content=body)
    assert response.status_code == 400
    openai_schemas.validate("ErrorResponse", response.json())
    assert "not UTF-8" in response.json()["error"]["message"]
