"""The facade's chat calls carried over one CellHop.Exchange stream (httpapi.carried_calls,
rpc.cell_hop): each call gets its own answer, messages or failure, exactly as its RPC would end, a
cancelled call is cancelled at the servicer, a stream nobody reads holds up only itself, and the
hop's stream survives what ends it."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile

import grpc
import pytest

from aiproxy.httpapi.carried_calls import CARRIED_MAX_BYTES, CarriedCalls
from aiproxy.rpc.cell_hop import STREAM_WINDOW_BYTES, CellHopServicer
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc, hop_pb2_grpc

METADATA = (("x-request-id", "req-1"), ("authorization", "Bearer k"))


class _Chat(chat_pb2_grpc.ChatServiceServicer):
    """Answers with the request's model as the answer's id; `fail` and `slow` models do as named."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.rpcs = 0  # calls that came as CreateChatCompletion RPCs of their own
        self.slow_started, self.slow_cancelled = asyncio.Event(), asyncio.Event()
        self.written = 0  # stream messages written

    async def answer(self, request, context):
        self.started.append(request.model)
        assert dict(context.invocation_metadata())["x-request-id"] == "req-1"
        if request.model == "fail":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down",
                                trailing_metadata=(("retry-after", "7"), ("detail-bin", b"\x00\xff")))
        if request.model == "slow":
            self.slow_started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.append(request.model)
                self.slow_cancelled.set()
                raise
        context.set_trailing_metadata((("x-request-id", "req-1"), ("x-ratelimit-remaining-requests", "9")))
        return chat_pb2.ChatCompletion(id=request.model)

    async def CreateChatCompletion(self, request, context):
        self.rpcs += 1
        return await self.answer(request, context)

    async def stream(self, request, context):
        """Model `N:SIZE[:fail]`: N messages of one chunk whose id is SIZE bytes, then OK or a failure."""
        count, size, *fail = request.model.split(":")
        await context.send_initial_metadata((("x-request-id", "req-1"), ("x-ratelimit-limit-requests", "5")))
        for index in range(int(count)):
            chunk = chat_pb2.ChatCompletionChunk(id=str(index).ljust(int(size), "."))
            await context.write(chat_pb2.ChatCompletionChunkBatch(chunks=[chunk]))
            self.written += 1
        if fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream went away")


class _CountingHop(CellHopServicer):
    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    async def Exchange(self, request_iterator, context):
        self.streams += 1
        await super().Exchange(request_iterator, context)


@contextlib.asynccontextmanager
async def _hop():
    chat, hop = _Chat(), _CountingHop()
    hop.carry(grpc.unary_unary_rpc_method_handler(chat.answer, chat_pb2.ChatCompletionRequest.FromString),
              grpc.unary_stream_rpc_method_handler(chat.stream, chat_pb2.ChatCompletionRequest.FromString))
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(chat, server)
    hop_pb2_grpc.add_CellHopServicer_to_server(hop, server)
    with tempfile.TemporaryDirectory() as directory:
        server.add_insecure_port(f"unix:{directory}/hop.sock")
        await server.start()
        channel = grpc.aio.insecure_channel(f"unix:{directory}/hop.sock")
        calls = CarriedCalls(channel)
        try:
            yield calls, chat, hop, server
        finally:
            await calls.close()
            await channel.close()
            await server.stop(None)


def _request(model: str, size: int = 0) -> bytes:
    request = chat_pb2.ChatCompletionRequest(model=model)
    if size:
        request.messages.add(role="user", content_text="x" * size)
    return request.SerializeToString()


def _answer_id(answer: bytes) -> str:
    return chat_pb2.ChatCompletion.FromString(answer).id


def test_concurrent_calls_each_get_their_own_answer_over_one_stream():
    async def scenario():
        async with _hop() as (calls, chat, hop, _):
            answers = await asyncio.gather(*(calls.call(_request(f"m{i}"), METADATA) for i in range(200)))
            return [(_answer_id(answer), dict(trailing)) for answer, trailing in answers], chat, hop

    answers, chat, hop = asyncio.run(scenario())
    assert [answer for answer, _ in answers] == [f"m{i}" for i in range(200)]
    assert answers[0][1] == {"x-request-id": "req-1", "x-ratelimit-remaining-requests": "9"}
    assert hop.streams == 1 and chat.rpcs == 0


def test_a_failed_call_ends_as_the_rpc_would_and_the_others_go_on():
    async def scenario():
        async with _hop() as (calls, _, _, _):
            return await asyncio.gather(calls.call(_request("fail"), METADATA), calls.call(_request("ok"), METADATA),
                                        return_exceptions=True)

    failed, answered = asyncio.run(scenario())
    assert isinstance(failed, grpc.aio.AioRpcError)
    assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and failed.details() == "slow down"
    assert tuple(failed.trailing_metadata()) == (("retry-after", "7"), ("detail-bin", b"\x00\xff"))
    assert _answer_id(answered[0]) == "ok"


def test_a_cancelled_call_is_cancelled_at_the_servicer():
    async def scenario():
        async with _hop() as (calls, chat, _, _):
            slow = asyncio.ensure_future(calls.call(_request("slow"), METADATA))
            await asyncio.wait_for(chat.slow_started.wait(), 5)
            slow.cancel()
            await asyncio.wait_for(chat.slow_cancelled.wait(), 1)
            answer, _ = await calls.call(_request("after"), METADATA)
            return chat.cancelled, _answer_id(answer)

    assert asyncio.run(scenario()) == (["slow"], "after")


def test_a_large_request_takes_a_call_of_its_own():
    async def scenario():
        async with _hop() as (calls, chat, hop, _):
            answer, _ = await calls.call(_request("big", CARRIED_MAX_BYTES), METADATA)
            return _answer_id(answer), chat.rpcs, hop.streams

    assert asyncio.run(scenario()) == ("big", 1, 0)


def test_the_calls_waiting_when_the_stream_ends_fail_unavailable_and_the_next_opens_a_new_one():
    async def scenario():
        async with _hop() as (calls, chat, hop, _):
            slow = asyncio.ensure_future(calls.call(_request("slow"), METADATA))
            await asyncio.wait_for(chat.slow_started.wait(), 5)
            calls._stream.cancel()  # as when the servicer's end fails
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await slow
            answer, _ = await calls.call(_request("again"), METADATA)
            return failed.value.code(), _answer_id(answer), hop.streams

    code, answer, streams = asyncio.run(scenario())
    assert code == grpc.StatusCode.UNAVAILABLE and answer == "again" and streams == 2


def test_close_ends_the_stream_and_the_servicer_cancels_what_still_runs():
    async def scenario():
        async with _hop() as (calls, chat, _, _):
            await calls.call(_request("first"), METADATA)
            slow = asyncio.ensure_future(calls.call(_request("slow"), METADATA))
            await asyncio.wait_for(chat.slow_started.wait(), 5)
            await calls.close()
            with pytest.raises(grpc.aio.AioRpcError):
                await slow
            return chat.cancelled

    assert asyncio.run(scenario()) == ["slow"]


async def _read_all(call) -> list[str]:
    ids = []
    while (message := await call.read()) is not grpc.aio.EOF:
        ids.extend(chunk.id.rstrip(".") for chunk in chat_pb2.ChatCompletionChunkBatch.FromString(message).chunks)
    return ids


def test_streams_and_unary_calls_share_the_stream_each_call_in_its_own_order():
    async def scenario():
        async with _hop() as (calls, _, hop, _):
            streams = [calls.stream(_request(f"{n}:10"), METADATA) for n in (3, 50, 1)]
            read = asyncio.gather(*map(_read_all, streams))
            answers = await asyncio.gather(*(calls.call(_request(f"m{i}"), METADATA) for i in range(20)))
            headers = [dict(await call.initial_metadata()) for call in streams]
            return await read, [_answer_id(answer) for answer, _ in answers], headers, hop.streams

    ids, answers, headers, streams = asyncio.run(scenario())
    assert ids == [[str(i) for i in range(n)] for n in (3, 50, 1)]
    assert answers == [f"m{i}" for i in range(20)] and streams == 1
    assert headers[0] == {"x-request-id": "req-1", "x-ratelimit-limit-requests": "5"}


def test_a_stream_that_fails_after_its_messages_raises_its_status_after_them():
    async def scenario():
        async with _hop() as (calls, _, _, _):
            call = calls.stream(_request("2:10:fail"), METADATA)
            ids = [await call.read(), await call.read()]
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call.read()
            return len(ids), failed.value

    count, failed = asyncio.run(scenario())
    assert count == 2 and failed.code() == grpc.StatusCode.UNAVAILABLE and failed.details() == "upstream went away"


def test_a_stream_nobody_reads_stops_at_its_window_without_holding_up_the_others():
    """The carried stream's own flow control: its servicer's writes wait once STREAM_WINDOW_BYTES are
    unread (as an RPC's wait for HTTP/2's window), and go on as the facade reads."""
    size = 16 * 1024
    count = 4 * STREAM_WINDOW_BYTES // size

    async def scenario():
        async with _hop() as (calls, chat, _, _):
            stalled = calls.stream(_request(f"{count}:{size}"), METADATA)
            answer, _ = await calls.call(_request("meanwhile"), METADATA)
            await asyncio.sleep(0.2)
            written_while_stalled = chat.written
            ids = await _read_all(stalled)
            return _answer_id(answer), written_while_stalled, len(ids)

    answer, written, read = asyncio.run(scenario())
    assert answer == "meanwhile"
    assert written <= STREAM_WINDOW_BYTES // size + 1, f"{written} messages written to a reader that read none"
    assert read == count
