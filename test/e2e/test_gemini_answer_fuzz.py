"""Seeded awkward Gemini answers (aiproxy.testing.gemini_answers) from the fake Gemini over HTTP,
through a real gateway: REST and gRPC clients, JSON and streamed, get what the translators make of
them (the unit test checks those against OpenAI's schemas and docs/gemini.md, on many more seeds),
and the request log records it; never a 500, an INTERNAL, a traceback or a hung call. A failure
names its seed."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from aiproxy.protojson import message_to_json
from aiproxy.providers.gemini_response import StreamTranslator, to_openai_response
from aiproxy.testing.awkward_sse import reference_completion, whatwg_events, without_fresh_ids
from aiproxy.testing.fake_gemini import JsonReply, StreamReply
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.gemini_answers import gemini_answer
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

SEEDS = fuzz_seeds(20_000, 16)  # apart from the unit test's seeds
MODEL = "gemini-2.5-flash"  # what the test gateway maps gemini-test to
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {CLIENT_KEY}"),)
TIMEOUT = 10  # seconds: a hung call fails the test instead of hanging it


@pytest.fixture(scope="module")
def gateway(upstream, gemini_server, tmp_path_factory):
    with GatewayProcess(tmp_path_factory.mktemp("gemini-fuzz"), upstream_url=upstream.base_url,
                        gemini_url=gemini_server.base_url) as gw:
        yield gw
        assert b"Traceback" not in gw.stderr_path.read_bytes()


@pytest.fixture(scope="module")
def stub(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


def _expected_stream(events: list[dict]) -> list[dict] | None:
    """The chunks the stream's events make, or None when they end without a finish (a 502)."""
    translator = StreamTranslator(MODEL, include_usage=True)
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    try:
        return chunks + translator.finish()
    except Exception:  # noqa: BLE001 - UpstreamStreamTruncated: the client must get an error
        return None


def _rest(gateway, stream: bool, request_id: str):
    body = {"model": "gemini-test", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=TIMEOUT,
                          headers={**AUTH, "X-Request-ID": request_id})
    assert response.status_code != 500, response.text
    if not stream:
        return response.json() if response.status_code == 200 else None
    events = [json.loads(data) for data in whatwg_events(response.content)[:-1]]
    return None if events and "error" in events[-1] else events


def _grpc(stub, stream: bool, request_id: str):
    request = chat_pb2.ChatCompletionRequest(model="gemini-test", stream=stream)
    if stream:
        request.stream_options.include_usage = True
    request.messages.add(role="user", content_text="hi")
    metadata = (*GRPC_AUTH, ("x-request-id", request_id))
    try:
        if not stream:
            return message_to_json(stub.CreateChatCompletion(request, metadata=metadata, timeout=TIMEOUT))
        return [message_to_json(chunk) for chunk in stub.StreamChatCompletion(request, metadata=metadata,
                                                                                timeout=TIMEOUT)]
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.DEADLINE_EXCEEDED), exc
        return None


@pytest.mark.parametrize("over_grpc", [False, True], ids=["rest", "grpc"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_awkward_gemini_answers_reach_clients_and_the_log_as_translated(gateway, stub, gemini_server, stream,
                                                                        over_grpc):
    for seed in SEEDS:
        answer = gemini_answer(seed)
        if stream:
            expected = _expected_stream(answer.events)
            gemini_server.enqueue(StreamReply(answer.events))
        else:
            expected = to_openai_response(answer.body, MODEL)
            gemini_server.enqueue(JsonReply(answer.body))
        request_id = f"fuzz-answer-{seed}-{stream}-{over_grpc}"
        got = _grpc(stub, stream, request_id) if over_grpc else _rest(gateway, stream, request_id)
        record = gateway.wait_for_record(request_id)
        if expected is None:
            assert got is None and record["status_code"] == 502, seed_label(seed)
            continue
        answers = expected if stream else [expected]
        assert without_fresh_ids(got if stream else [got]) == without_fresh_ids(answers), seed_label(seed)
        assert record["status_code"] == 200, seed_label(seed)
        logged = reference_completion(without_fresh_ids(expected)) if stream else without_fresh_ids([expected])[0]
        assert _loggable(without_fresh_ids([record["response"]])[0]) == _loggable(logged), seed_label(seed)


def _loggable(body: dict) -> dict:
    """What the log record and the reference agree on: each choice's text, calls and finish reason, usage."""
    return {"usage": body.get("usage"), "choices": [
        (choice["index"], choice["message"].get("content") or None, choice["message"].get("tool_calls"),
         choice["finish_reason"]) for choice in body["choices"]]}
