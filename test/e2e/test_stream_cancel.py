"""A gRPC client that cancels a stream it has started reading: the upstream call must stop at once
and the record keep what was streamed (the relay used to be left suspended until garbage collection)."""

from __future__ import annotations

import time

import grpc
import pytest

from aiproxy.testing.fake_openai import StreamReply, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

CANCEL_BOUND = 0.1  # seconds from the client giving up to the upstream call being cancelled


@pytest.mark.parametrize("method", ["StreamChatCompletion", "StreamChatCompletionBatches"])
@pytest.mark.parametrize("round_", range(3))  # the leak depended on where the cancel landed: try it more than once
def test_grpc_stream_cancel_after_reading_stops_the_upstream(gateway, fake, method, round_):
    fake.push(StreamReply(text_chunks(["first"], usage=False)[:2], done=False, hang_after=True))
    request_id = f"cancel-{method}-{round_}"
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="hi")
        call = getattr(chat_pb2_grpc.ChatServiceStub(channel), method)(
            request, metadata=(("authorization", f"Bearer {CLIENT_KEY}"), ("x-request-id", request_id)))
        next(call)  # the first message has arrived: the relay is now suspended in the servicer
        call.cancel()
        gave_up = time.monotonic()
        assert fake.wait_cancelled().cancelled_at - gave_up < CANCEL_BOUND
    record = gateway.wait_for_record(request_id)
    assert record["status_code"] == 499
    assert record["response"]["choices"][0]["message"]["role"] == "assistant"  # the partial answer is kept
