"""An upstream that keeps sending without getting anywhere (a JSON body a byte at a time, an event
stream of keep-alive comments only, an event that never ends) is timed out after the read timeout,
for every kind of provider: the read timeout used to bound only each socket read, so such a call,
its client and its upstream connection were held for good."""

from __future__ import annotations

import time

import grpc
import httpx
import orjson
import pytest

from aiproxy.testing.fake_gemini import FakeGemini, text_response
from aiproxy.testing.fake_openai import FakeOpenAIUpstream, StreamReply, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.trickle import TrickleReply
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

READ_TIMEOUT = 1.0
BOUND = READ_TIMEOUT + 1.0  # the request's start to the client's error, on a loaded machine too
OPENAI_KINDS = ["gpt-test", "local-test"]  # openrouter, openai
EVERY_KIND = [*OPENAI_KINDS, "gemini-test"]

JSON_BYTE_BY_BYTE = TrickleReply(head=b'{"id": "chatcmpl-1", "choices": [', drip=b" ")
COMMENTS_ONLY = TrickleReply(drip=b": OPENROUTER PROCESSING\n\n", interval=0.2, content_type="text/event-stream")


def _one_event_then_bytes(model: str) -> TrickleReply:
    """A whole first event in the provider's format, then the bytes of a second that never ends."""
    if model == "gemini-test":
        first = b"data: " + orjson.dumps(text_response("Hel", finish=None)) + b"\r\n\r\n"
    else:
        first = b"data: " + orjson.dumps(text_chunks(["Hel"], usage=False)[1]) + b"\n\n"
    return TrickleReply(head=first + b'data: {"id": "', drip=b"x", content_type="text/event-stream")


class Upstreams:
    """The fake OpenAI-style upstream and the fake Gemini API, addressed by the model mapped to each."""

    def __init__(self, openai: FakeOpenAIUpstream, gemini: FakeGemini) -> None:
        self.openai, self.gemini = openai, gemini

    def push(self, model: str, reply) -> None:
        (self.gemini.enqueue if model == "gemini-test" else self.openai.push)(reply)

    def hung_up_on(self, model: str, within: float = 2.0) -> bool:
        """Whether the gateway closed the model's upstream call (within a few of the fake's writes)."""
        if model != "gemini-test":
            return self.openai.wait_cancelled(within).cancelled_at is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.gemini.requests and self.gemini.requests[-1].cancelled:
                return True
            time.sleep(0.01)
        return False


@pytest.fixture(scope="module")
def gateway(upstream, gemini_server, tmp_path_factory):
    env = {"UPSTREAM__READ_TIMEOUT": str(READ_TIMEOUT)}
    with GatewayProcess(tmp_path_factory.mktemp("progress"), upstream_url=upstream.base_url,
                        gemini_url=gemini_server.base_url, env=env) as gw:
        yield gw


@pytest.fixture()
def upstreams(fake, gemini_server):
    gemini_server.reset()
    yield Upstreams(fake, gemini_server)
    gemini_server.reset()


def _headers(request_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": request_id}


def _body(model: str, stream: bool) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def _rest_stream(gateway: GatewayProcess, model: str, request_id: str) -> tuple[int, list[dict | str], float]:
    """A REST stream read to its end: status, the `data:` payloads (JSON parsed, [DONE] as is), seconds."""
    started = time.monotonic()
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", headers=_headers(request_id),
                      json=_body(model, True), timeout=10) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response.status_code, [d if d == "[DONE]" else orjson.loads(d) for d in data], time.monotonic() - started


def _content(chunks: list[dict]) -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)


def _assert_logged_as_timeout(gateway: GatewayProcess, request_id: str) -> None:
    record = gateway.wait_for_record(request_id)
    assert (record["status_code"], record["error"]["code"]) == (504, "upstream_timeout")


@pytest.mark.parametrize("model", EVERY_KIND)
def test_a_json_answer_trickled_a_byte_at_a_time_is_a_504(gateway, upstreams, model):
    upstreams.push(model, JSON_BYTE_BY_BYTE)
    request_id = f"trickled-json-{model}"
    started = time.monotonic()
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=_headers(request_id),
                          json=_body(model, False), timeout=10)
    took = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert READ_TIMEOUT <= took < BOUND
    assert upstreams.hung_up_on(model)
    _assert_logged_as_timeout(gateway, request_id)


@pytest.mark.parametrize("model", EVERY_KIND)
def test_a_stream_of_keep_alive_comments_only_ends_with_the_timeout_frame(gateway, upstreams, model):
    upstreams.push(model, COMMENTS_ONLY)
    request_id = f"comments-only-{model}"
    status, data, took = _rest_stream(gateway, model, request_id)
    assert status == 200  # sent with the first comment, which reaches the client (README: streams)
    assert data[0]["error"]["code"] == "upstream_timeout" and data[1:] == ["[DONE]"]
    assert READ_TIMEOUT <= took < BOUND
    assert upstreams.hung_up_on(model)
    _assert_logged_as_timeout(gateway, request_id)


@pytest.mark.parametrize("model", EVERY_KIND)
def test_a_stream_that_stops_after_one_event_but_keeps_sending_bytes_ends_with_the_timeout_frame(
        gateway, upstreams, model):
    upstreams.push(model, _one_event_then_bytes(model))
    request_id = f"one-event-{model}"
    status, data, took = _rest_stream(gateway, model, request_id)
    assert status == 200
    assert _content(data[:-2]) == "Hel"
    assert data[-2]["error"]["code"] == "upstream_timeout" and data[-1] == "[DONE]"
    assert "read_timeout" in data[-2]["error"]["message"]
    assert READ_TIMEOUT <= took < BOUND
    assert upstreams.hung_up_on(model)
    _assert_logged_as_timeout(gateway, request_id)


@pytest.mark.parametrize("method", ["CreateChatCompletion", "StreamChatCompletion"])
def test_grpc_gets_deadline_exceeded(gateway, upstreams, method):
    upstreams.push("gpt-test", JSON_BYTE_BY_BYTE if method == "CreateChatCompletion" else COMMENTS_ONLY)
    request_id = f"grpc-trickled-{method}"
    request = chat_pb2.ChatCompletionRequest(model="gpt-test")
    request.messages.add(role="user", content_text="hi")
    started = time.monotonic()
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        call = getattr(chat_pb2_grpc.ChatServiceStub(channel), method)
        with pytest.raises(grpc.RpcError) as err:
            answer = call(request, timeout=10,
                          metadata=(("authorization", f"Bearer {CLIENT_KEY}"), ("x-request-id", request_id)))
            if method != "CreateChatCompletion":
                list(answer)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert READ_TIMEOUT <= time.monotonic() - started < BOUND
    assert upstreams.hung_up_on("gpt-test")
    _assert_logged_as_timeout(gateway, request_id)


@pytest.mark.parametrize("model", OPENAI_KINDS)
def test_a_slow_stream_that_keeps_progressing_is_not_cut(gateway, upstreams, model):
    """An event every 0.4 s for over 3 s with a read timeout of 1 s: the bound is on the gaps."""
    upstreams.push(model, StreamReply(text_chunks([f" w{i}" for i in range(7)], usage=False), per_event=True,
                                      delay=0.4))
    status, data, took = _rest_stream(gateway, model, f"slow-progress-{model}")
    assert status == 200 and data[-1] == "[DONE]"
    assert all("error" not in d for d in data[:-1])
    assert _content(data[:-1]) == "".join(f" w{i}" for i in range(7))
    assert took > 3
