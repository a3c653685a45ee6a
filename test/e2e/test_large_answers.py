"""Upstream answers larger than one gRPC message (Settings.grpc_message_bytes, from MAX_BODY_BYTES)
cannot cross the gateway's gRPC hop: they are a 502 `bad_upstream_response`, logged as such, not the
gateway's own 500 (grpc.aio refusing to send them) with a request log record saying 200."""

from __future__ import annotations

import grpc
import httpx
import orjson
import pytest

from aiproxy.sse import SSEDecoder
from aiproxy.testing.fake_openai import JSONReply, StreamReply, completion, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
U = [{"role": "user", "content": "hi"}]
TOO_LARGE = "y" * (1536 * 1024)  # over the 1 MiB + 64 KiB message limit of this gateway


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

