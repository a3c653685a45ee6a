"""Seeded fuzzing of upstream event streams through a real gateway: awkward but valid streams
(aiproxy.testing.awkward_sse) from the fake upstreams over HTTP reach REST and gRPC clients, and the
request log, as a reference reader of the SSE spec reads them; broken ones end in one error, never
a 500, a traceback or a hung call. A failure names its seed (the unit test runs many more)."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from aiproxy.protojson import message_to_json
from aiproxy.testing.awkward_sse import (
    EventStreamWrites,
    gemini_expected,
    gemini_stream,
    openai_expected,
    openai_stream,
    reference_completion,
    whatwg_events,
    without_fresh_ids,
)
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc, common_pb2

SEEDS = fuzz_seeds(10_000, 12)  # apart from the unit test's seeds: more cases, not the same ones
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {CLIENT_KEY}"),)
TIMEOUT = 10  # seconds: a hung call fails the test instead of hanging it
CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
GEMINI_EVENT = b'data: {"candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}, "index": 0}]}\r\n\r\n'
BROKEN = {  # what follows a stream's first events, or starts it
    "truncated mid-event": b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"cut',
    "not JSON": b"data: hello\n\n",
    "a JSON array": b'data: [{"choices": []}]\n\n',
    "a NUL byte": b'data: {"choices":[{"index":0,"delta":{"content":"a\x00b"}}]}\n\n',
    "NUL between tokens": b'data: {"choices":\x00[]}\n\n',
    "invalid UTF-8": b'data: {"choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}\n\n',
    "ended early": b"",
}


@pytest.fixture(scope="module")
def gateway(upstream, gemini_server, tmp_path_factory):
    with GatewayProcess(tmp_path_factory.mktemp("sse-fuzz"), upstream_url=upstream.base_url,
                        gemini_url=gemini_server.base_url) as gw:
        yield gw


@pytest.fixture(scope="module")
def stub(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


def _rest(gateway, model: str, request_id: str) -> tuple[list[dict], dict | None]:
    """A REST stream's chunks and its error frame (if any); it must end with [DONE]."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=TIMEOUT,
                          headers={**AUTH, "X-Request-ID": request_id})
    if response.status_code != 200:  # failed before its first event: a plain error answer
        assert 400 <= response.status_code < 600 and response.status_code != 500, response.text
        return [], response.json()["error"]
    events = [json.loads(data) for data in whatwg_events(response.content)[:-1]]
    assert whatwg_events(response.content)[-1] == "[DONE]"
    errors = [event for event in events if "error" in event]
    assert errors in ([], [events[-1]]), events  # one error frame at most, the last before [DONE]
    return events[:len(events) - len(errors)], errors[0]["error"] if errors else None


def _grpc(stub, model: str, request_id: str) -> tuple[list[dict], common_pb2.ErrorDetail | None]:
    request = chat_pb2.ChatCompletionRequest(model=model, stream=True,
                                             stream_options=chat_pb2.StreamOptions(include_usage=True))
    request.messages.add(role="user", content_text="hi")
    chunks = []
    try:
        for chunk in stub.StreamChatCompletion(request, metadata=(*GRPC_AUTH, ("x-request-id", request_id)),
                                               timeout=TIMEOUT):
            chunks.append(message_to_json(chunk))
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.DEADLINE_EXCEEDED), exc
        detail = dict(exc.trailing_metadata())["aiproxy-error-bin"]
        return chunks, common_pb2.ErrorDetail.FromString(detail)
    return chunks, None


def _call(gateway, stub, model: str, request_id: str, over_grpc: bool):
    if over_grpc:
        chunks, detail = _grpc(stub, model, request_id)
        return chunks, detail and {"message": detail.message, "status": detail.http_status}
    return _rest(gateway, model, request_id)


@pytest.mark.parametrize("over_grpc", [False, True], ids=["rest", "grpc"])
def test_awkward_openai_streams_reach_clients_and_the_log_as_the_spec_reads_them(gateway, stub, fake, over_grpc):
    for seed in SEEDS:
        case = openai_stream(seed)
        expected, failure = openai_expected(case.body)
        fake.push(EventStreamWrites(case.writes))
        request_id = f"fuzz-openai-{seed}-{over_grpc}"
        chunks, error = _call(gateway, stub, "gpt-test", request_id, over_grpc)
        assert chunks == expected, seed_label(seed)
        assert (error and error["message"]) == (failure and failure["message"]), seed_label(seed)
        record = gateway.wait_for_record(request_id)
        assert record["status_code"] == (failure["code"] if failure else 200), seed_label(seed)
        assert record["response"] == reference_completion(expected), seed_label(seed)


@pytest.mark.parametrize("over_grpc", [False, True], ids=["rest", "grpc"])
def test_awkward_gemini_streams_reach_clients_and_the_log_as_the_spec_reads_them(gateway, stub, gemini_server,
                                                                                over_grpc):
    for seed in SEEDS:
        case = gemini_stream(seed)
        expected = gemini_expected(case.body)
        gemini_server.enqueue(EventStreamWrites(case.writes))
        request_id = f"fuzz-gemini-{seed}-{over_grpc}"
        chunks, error = _call(gateway, stub, "gemini-test", request_id, over_grpc)
        assert error is None and without_fresh_ids(chunks) == without_fresh_ids(expected), f"{seed_label(seed)}: {error}"
        record = gateway.wait_for_record(request_id)
        assert record["status_code"] == 200, seed_label(seed)
        assert without_fresh_ids([record["response"]]) == [reference_completion(without_fresh_ids(expected))], \
            seed_label(seed)


@pytest.mark.parametrize("over_grpc", [False, True], ids=["rest", "grpc"])
@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_stream_ends_in_one_error_and_is_logged(gateway, stub, fake, gemini_server, name, over_grpc):
    for model, first, upstream in [("gpt-test", CHUNK, fake.push), ("gemini-test", GEMINI_EVENT, gemini_server.enqueue)]:
        for prefix in (b"", first):  # before the first event, and after it
            upstream(EventStreamWrites([prefix, BROKEN[name]] if prefix else [BROKEN[name]]))
            request_id = f"fuzz-broken-{model}-{name}-{len(prefix)}-{over_grpc}".replace(" ", "-")
            chunks, error = _call(gateway, stub, model, request_id, over_grpc)
            assert error is not None and error["message"], (model, prefix, error)
            record = gateway.wait_for_record(request_id)
            assert record["status_code"] >= 400 and record["status_code"] != 500, record
    assert b"Traceback" not in gateway.stderr_path.read_bytes()
