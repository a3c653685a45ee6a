"""Awaiting the cell's hop (facade -> servicers) from a handler that aiohttp may cancel.

aiohttp cancels a handler when its client goes away, and the cancellation reaches whatever the
handler awaits. When that is a gRPC batch (a unary call's answer, a stream's next message),
grpcio never frees the batch's native memory, about 2 KB per call, since nothing reads its result
(grpc/grpc#43360, open in grpcio 1.85): a gateway whose clients often give up (a chat UI's stop
button, client timeouts) would grow without bound. So the facade awaits the hop through
`answer` and `next_message`, which never let a cancellation reach grpc.aio's own awaits: it cancels
the RPC in gRPC's core instead, which ends the batch, whose awaiting task then reads and frees it.
The servicer and its upstream call are cancelled as promptly as before.

Its unary chat calls the facade sends through `CarriedCalls`, as items of one CellHop.Exchange stream
(rpc/cell_hop.py): a cancellation there is a message, and no gRPC batch is ever abandoned.
"""

from __future__ import annotations

import asyncio
import itertools

import grpc

from aiproxypb.v1 import hop_pb2

# grpc.aio's own details for a call its client cancelled.
_CANCELLED = "Locally cancelled by application!"


async def answer(call: grpc.aio.UnaryUnaryCall):
    """The answer of a unary call, awaited through the call's done callback rather than its task
    (a shielded task per call cost 21 us of CPU, this 2 us, in a micro-benchmark of the hop)."""
    finished = asyncio.get_running_loop().create_future()
    call.add_done_callback(lambda _: finished.done() or finished.set_result(None))
    try:
        await finished
    except asyncio.CancelledError:
        _cancel_in_core(call)  # grpc.aio's task reads the ended batch; it keeps no error to report
        raise
    return await call  # done: returns at once


async def next_message(call: grpc.aio.UnaryStreamCall):
    """A server stream's next message, or grpc.aio.EOF. The read runs shielded in a task of its own
    (a stream has a few: its messages are batches of chunks)."""
    reading = asyncio.ensure_future(call.read())
    try:
        return await asyncio.shield(reading)
    except asyncio.CancelledError:
        _cancel_in_core(call)
        await asyncio.wait((reading,))
        if not reading.cancelled():
            reading.exception()  # the cancelled call's own error: nothing to report
        raise


def _cancel_in_core(call: grpc.aio.Call) -> None:
    """Cancel the RPC in gRPC's core only. grpc.aio's cancel() of a unary call also cancels the task
    that awaits the call's batch, which is the leak."""
    core = getattr(call, "_cython_call", None)
    if core is None:  # a grpcio that renamed it: cancel() still cancels, leak and all
        call.cancel()
    elif not core.done():
        core.cancel(_CANCELLED)


# A request larger than this takes a CreateChatCompletion call of its own: on the shared stream it would
# hold up the calls behind it (gRPC sends a stream's messages in order), and add its copies in a batch.
CARRIED_MAX_BYTES = 256 * 1024
_STREAM_CLOSE_SECONDS = 1.0  # close(): how long the servicer may take to send its last results


class CarriedCalls:
    """The facade's CreateChatCompletion calls, carried by one CellHop.Exchange stream, opened on the
    first call and again after a failure; the calls waiting when it fails end with its status
    (UNAVAILABLE when it just ended), which the facade answers as it would the RPC's. A request over
    CARRIED_MAX_BYTES takes a call of its own."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._open_stream = channel.stream_stream(
            "/aiproxy.v1.CellHop/Exchange",
            request_serializer=hop_pb2.HopCalls.SerializeToString,
            response_deserializer=hop_pb2.HopResults.FromString,
            _registered_method=True,
        )
        self._own_call = channel.unary_unary("/aiproxy.v1.ChatService/CreateChatCompletion", _registered_method=True)
        self._stream: grpc.aio.StreamStreamCall | None = None
        self._tasks: tuple[asyncio.Task, asyncio.Task] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._outbox = hop_pb2.HopCalls()
        self._send = asyncio.Event()  # calls in the outbox

    async def call(self, request: bytes, metadata: tuple[tuple[str, str], ...]) -> tuple[bytes, grpc.aio.Metadata]:
        """The serialized answer of a CreateChatCompletion call of a serialized request, and its trailing
        metadata; its failure as grpc.aio.AioRpcError, as the RPC would fail."""
        if len(request) > CARRIED_MAX_BYTES:
            call = self._own_call(request, metadata=metadata)
            return await answer(call), await call.trailing_metadata()
        if self._stream is None:
            self._start()
        call_id = next(self._ids)
        answered = self._waiting[call_id] = asyncio.get_running_loop().create_future()
        self._outbox.calls.add(id=call_id, request=request, metadata=dict(metadata))
        self._send.set()
        try:
            result = await answered
        except asyncio.CancelledError:
            if self._waiting.pop(call_id, None) is not None:  # still open: tell the servicer
                self._outbox.calls.add(id=call_id, cancel=True)
                self._send.set()
            raise
        trailing = grpc.aio.Metadata(*(
            (entry.key, entry.value if entry.key.endswith("-bin") else entry.value.decode())
            for entry in result.trailing_metadata
        ))
        if result.code:
            code = _STATUS_CODES.get(result.code, grpc.StatusCode.UNKNOWN)
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, result.details)
        return result.response, trailing

    def _start(self) -> None:
        self._stream = stream = self._open_stream()
        self._tasks = (asyncio.ensure_future(self._write(stream)), asyncio.ensure_future(self._read(stream)))

    async def _write(self, stream: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                await self._send.wait()
                self._send.clear()
                calls, self._outbox = self._outbox, hop_pb2.HopCalls()
                await stream.write(calls)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, grpc.aio.InternalError):
            stream.cancel()  # its reader ends the calls

    async def _read(self, stream: grpc.aio.StreamStreamCall) -> None:
        waiting = self._waiting
        failure = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "the cell's hop stream ended")
        try:
            while (batch := await stream.read()) is not grpc.aio.EOF:
                for result in batch.results:
                    answered = waiting.pop(result.id, None)
                    if answered is not None and not answered.done():  # done: cancelled, not yet told
                        answered.set_result(result)
        except grpc.aio.AioRpcError as exc:
            failure = exc
        finally:
            self._stream = None
            self._tasks[0].cancel()
            self._outbox, self._waiting = hop_pb2.HopCalls(), {}
            for answered in waiting.values():
                if not answered.done():
                    answered.set_exception(failure)

    async def close(self) -> None:
        """End the stream once the facade's calls are done: the servicer sends what it has left and
        ends it; one that does not is cancelled after _STREAM_CLOSE_SECONDS."""
        if self._stream is None:
            return
        stream, (writing, reading) = self._stream, self._tasks
        writing.cancel()
        await asyncio.wait((writing,))
        try:
            await stream.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, grpc.aio.InternalError):
            pass  # it ended already
        await asyncio.wait((reading,), timeout=_STREAM_CLOSE_SECONDS)
        stream.cancel()
        await asyncio.wait((reading,))


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
