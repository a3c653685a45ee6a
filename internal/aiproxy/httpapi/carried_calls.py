"""The REST facade's chat calls, carried by one CellHop.Exchange stream per cell (rpc/cell_hop.py,
docs/architecture.md "Chat calls over the gRPC hop"): a call costs a share of a few messages on an
open stream instead of an RPC of its own, and ends as that RPC would (its answer or messages, or a
grpc.aio.AioRpcError with the RPC's status, details and trailers)."""

from __future__ import annotations

import asyncio
import itertools

import grpc

from aiproxy.httpapi.hop import answer, next_message
from aiproxy.rpc.cell_hop import metadata_of
from aiproxypb.v1 import hop_pb2

# A request larger than this takes a call of its own: on the shared stream it would hold up the calls
# behind it (gRPC sends a stream's messages in order), and add its copies in a batch.
CARRIED_MAX_BYTES = 256 * 1024
_STREAM_CLOSE_SECONDS = 1.0  # close(): how long the servicer may take to send its last results
_METHOD = "/aiproxy.v1.ChatService/"


def _failure(result: hop_pb2.HopResult) -> grpc.aio.AioRpcError:
    code = _STATUS_CODES.get(result.code, grpc.StatusCode.UNKNOWN)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), metadata_of(result.trailing_metadata), result.details)


class _Answer:
    """Where a carried unary call's result goes."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future = asyncio.get_running_loop().create_future()

    def deliver(self, result: hop_pb2.HopResult) -> None:
        if not self.future.done():  # done: cancelled, its cancel not yet sent
            self.future.set_result(result)

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class CarriedStream:
    """A StreamChatCompletionBatches call carried by the hop, read as grpc.aio's UnaryStreamCall is: read()
    gives each message (serialized) and then grpc.aio.EOF, or raises the call's failure."""

    def __init__(self, calls: CarriedCalls, call_id: int) -> None:
        self._calls, self._id = calls, call_id
        self._results: asyncio.Queue = asyncio.Queue()  # HopResult, or the hop's failure
        self._initial = grpc.aio.Metadata()
        self._ended = False
        self._read = 0  # bytes read and not yet credited back

    def deliver(self, result: hop_pb2.HopResult) -> None:
        self._results.put_nowait(result)

    def fail(self, error: grpc.aio.AioRpcError) -> None:
        self._results.put_nowait(error)

    async def read(self):
        while not self._ended:
            result = await self._results.get()  # a plain queue: cancelling this read abandons nothing
            if isinstance(result, grpc.aio.AioRpcError):
                self._ended = True
                raise result
            if not result.more:
                self._ended = True
                if result.code:
                    raise _failure(result)
            elif not result.HasField("response"):
                self._initial = metadata_of(result.initial_metadata)
            else:
                message = result.response  # each read of a bytes field is a copy
                self._read += len(message)
                if self._read >= STREAM_CREDIT_BYTES:  # the servicer may send as much more
                    self._calls.credit(self._id, self._read)
                    self._read = 0
                return message
        return grpc.aio.EOF

    async def initial_metadata(self) -> grpc.aio.Metadata:
        """Known once the first read() returned."""
        return self._initial

    def cancel(self) -> None:
        if not self._ended:
            self._ended = True
            self._calls.cancel(self._id)


# A streamed call's messages read are credited back to the servicer once this many bytes were read:
# less than its window (rpc.cell_hop.STREAM_WINDOW_BYTES), which its writes wait for. Most streams
# are smaller and credit nothing.
STREAM_CREDIT_BYTES = 16 * 1024


class _OwnStream:
    """A stream's own StreamChatCompletionBatches call (a request over CARRIED_MAX_BYTES), read as CarriedStream."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self._call = call

    async def read(self):
        return await next_message(self._call)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await self._call.initial_metadata()

    def cancel(self) -> None:
        self._call.cancel()


class CarriedCalls:
    """The facade's chat calls, carried by one CellHop.Exchange stream, opened on the first call and
    again after a failure; the calls waiting when it fails end with its status (UNAVAILABLE when it
    just ended), which the facade answers as it would the RPC's. A request over CARRIED_MAX_BYTES
    takes a call of its own. Requests and answers travel serialized: nothing is converted twice."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._open_stream = channel.stream_stream(
            "/aiproxy.v1.CellHop/Exchange",
            request_serializer=hop_pb2.HopCalls.SerializeToString,
            response_deserializer=hop_pb2.HopResults.FromString,
            _registered_method=True,
        )
        self._own_call = channel.unary_unary(_METHOD + "CreateChatCompletion", _registered_method=True)
        self._own_stream = channel.unary_stream(_METHOD + "StreamChatCompletionBatches", _registered_method=True)
        self._stream: grpc.aio.StreamStreamCall | None = None
        self._tasks: tuple[asyncio.Task, asyncio.Task] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Answer | CarriedStream] = {}
        self._outbox = hop_pb2.HopCalls()
        self._send = asyncio.Event()  # items in the outbox

    async def call(self, request: bytes, metadata: tuple[tuple[str, str], ...]) -> tuple[bytes, grpc.aio.Metadata]:
        """The serialized answer of a CreateChatCompletion call of a serialized request, and its trailing
        metadata; its failure as grpc.aio.AioRpcError, as the RPC would fail."""
        if len(request) > CARRIED_MAX_BYTES:
            call = self._own_call(request, metadata=metadata)
            return await answer(call), await call.trailing_metadata()
        receiver, call_id = _Answer(), next(self._ids)
        self._start_call(call_id, receiver, request, metadata, stream=False)
        try:
            result = await receiver.future
        except asyncio.CancelledError:
            self.cancel(call_id)
            raise
        if result.code:
            raise _failure(result)
        return result.response, metadata_of(result.trailing_metadata)

    def stream(self, request: bytes, metadata: tuple[tuple[str, str], ...]) -> CarriedStream | _OwnStream:
        """A StreamChatCompletionBatches call of a serialized request."""
        if len(request) > CARRIED_MAX_BYTES:
            return _OwnStream(self._own_stream(request, metadata=metadata))
        call_id = next(self._ids)
        receiver = CarriedStream(self, call_id)
        self._start_call(call_id, receiver, request, metadata, stream=True)
        return receiver

    def _start_call(self, call_id: int, receiver: _Answer | CarriedStream, request: bytes, metadata, *,
                    stream: bool) -> None:
        if self._stream is None:
            self._start()
        self._waiting[call_id] = receiver
        self._outbox.calls.add(id=call_id, request=request, metadata=dict(metadata), stream=stream)
        self._send.set()

    def cancel(self, call_id: int) -> None:
        if self._waiting.pop(call_id, None) is not None:  # still open: tell the servicer
            self._outbox.calls.add(id=call_id, cancel=True)
            self._send.set()

    def credit(self, call_id: int, read: int) -> None:
        if call_id in self._waiting:
            self._outbox.calls.add(id=call_id, credit=read)
            self._send.set()

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
                    receiver = waiting.get(result.id) if result.more else waiting.pop(result.id, None)
                    if receiver is not None:
                        receiver.deliver(result)
        except grpc.aio.AioRpcError as exc:
            failure = exc
        finally:
            self._stream = None
            stream.cancel()  # when this reader failed, not the stream: the servicer's side ends too
            self._tasks[0].cancel()
            self._outbox, self._waiting = hop_pb2.HopCalls(), {}
            for receiver in waiting.values():
                receiver.fail(failure)

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
