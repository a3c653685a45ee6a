"""CellHop.Exchange: the REST facade's chat calls, many over one stream.

grpc.aio spends ~250 us of CPU on each unary call between the facade and its ChatService (both ends in
this process), and ~10 us on a call carried as an item of an open stream's messages, where the
results that are ready together travel in one message (docs/architecture.md, "Chat calls over the
gRPC hop"). Each carried call runs the server's own handler for its RPC (CreateChatCompletion or
StreamChatCompletionBatches), interceptors included, in a task of its own with a context of its own:
its key is checked, it is tracked for the shutdown and request-logged exactly as the RPC would be,
and its results are what that RPC would have sent: initial metadata and messages, then its status,
details, trailing metadata (and a unary call's answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from aiproxypb.v1 import hop_pb2, hop_pb2_grpc

CARRIED_METHODS = ("/aiproxy.v1.ChatService/CreateChatCompletion", "/aiproxy.v1.ChatService/StreamChatCompletionBatches")
# A streamed call's messages the facade has not read yet: its writes wait while they reach this (as an
# RPC's wait for gRPC's flow control), so a client that reads nothing holds up only its own call, and
# the servicer ends it after REQUEST_BODY_TIMEOUT_SECONDS. The facade credits what it read at least
# every httpapi.carried_calls.STREAM_CREDIT_BYTES (less than this, or a stream could wait for good).
STREAM_WINDOW_BYTES = 256 * 1024


def add_metadata(entries, metadata) -> None:
    """gRPC metadata into a repeated MetadataEntry field (values of `-bin` keys are bytes)."""
    for key, value in metadata:
        entries.add(key=key, value=value if isinstance(value, bytes) else value.encode())


def metadata_of(entries) -> grpc.aio.Metadata:
    """add_metadata's inverse, for the facade."""
    return grpc.aio.Metadata(*(
        (entry.key, entry.value if entry.key.endswith("-bin") else entry.value.decode()) for entry in entries
    ))


class CarriedCallContext:
    """What a carried call's handlers use of grpc.aio's ServicerContext. The facade sets no deadline."""

    __slots__ = ("_metadata", "_peer", "_emit", "_unread", "_credited", "_cancelled", "code", "details",
                 "trailing_metadata")

    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str,
                 emit: Callable[[Callable[[hop_pb2.HopResult], None]], None]) -> None:
        self._metadata = metadata
        self._peer = peer
        self._emit = emit  # emit(fill): a result of this call, `fill` sets what it carries
        self._unread = 0  # bytes of messages sent that the facade has not read yet
        self._credited: asyncio.Event | None = None
        self._cancelled = False
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.trailing_metadata: tuple = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> None:
        return None

    def done(self) -> bool:
        return self._cancelled

    def cancelled(self) -> None:
        self._cancelled = True

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing_metadata = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        self.code, self.details = code, details
        if trailing_metadata:
            self.trailing_metadata = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    async def send_initial_metadata(self, metadata) -> None:
        def fill(result: hop_pb2.HopResult) -> None:
            result.more = True
            add_metadata(result.initial_metadata, metadata)

        self._emit(fill)

    async def write(self, message) -> None:
        data = message.SerializeToString()
        while self._unread >= STREAM_WINDOW_BYTES:
            self._credited = self._credited or asyncio.Event()
            self._credited.clear()
            await self._credited.wait()
        self._unread += len(data)

        def fill(result: hop_pb2.HopResult) -> None:
            result.more = True
            result.response = data

        self._emit(fill)

    def credit(self, read: int) -> None:
        self._unread = max(0, self._unread - read)
        if self._credited is not None:
            self._credited.set()

    def end(self, result: hop_pb2.HopResult, answer) -> None:
        """Fill the call's last result."""
        result.code, result.details = self.code.value[0], self.details
        if answer is not None:
            result.response = answer.SerializeToString()
        add_metadata(result.trailing_metadata, self.trailing_metadata)


class CellHopServicer(hop_pb2_grpc.CellHopServicer):
    def __init__(self) -> None:
        self._handlers: tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler] | None = None

    def carry(self, unary: grpc.RpcMethodHandler, stream: grpc.RpcMethodHandler) -> None:
        """The server's handlers of CARRIED_METHODS, their interceptors applied (rpc.server.GrpcServer)."""
        self._handlers = (unary, stream)

    async def Exchange(self, request_iterator, context):
        (unary, stream) = self._handlers
        peer = context.peer()
        running: dict[int, tuple[asyncio.Task, CarriedCallContext]] = {}
        ready = asyncio.Event()  # results to send, or the facade's stream ended
        results = hop_pb2.HopResults()

        def emitter(call_id: int):
            def emit(fill) -> None:
                fill(results.results.add(id=call_id))
                ready.set()

            return emit

        def finished(call_id: int, carried: CarriedCallContext, task: asyncio.Task) -> None:
            running.pop(call_id, None)
            ready.set()
            if task.cancelled():  # its client went away: nobody waits for it
                return
            error = task.exception()
            if error is not None and not isinstance(error, grpc.aio.AbortError):  # the interceptors end all else so
                carried.code, carried.details = grpc.StatusCode.UNKNOWN, "the call failed"
            carried.end(results.results.add(id=call_id), task.result() if error is None else None)

        def start(call: hop_pb2.HopCall) -> None:
            call_id = call.id
            carried = CarriedCallContext(tuple(call.metadata.items()), peer, emitter(call_id))
            handler = stream.unary_stream if call.stream else unary.unary_unary
            task = asyncio.ensure_future(handler(unary.request_deserializer(call.request), carried))
            running[call_id] = (task, carried)
            task.add_done_callback(lambda task: finished(call_id, carried, task))  # not `call`: its batch

        def cancel(call_id: int) -> None:
            if call_id in running:  # else it has ended: its result is on its way, and ignored
                task, carried = running[call_id]
                carried.cancelled()
                task.cancel()

        async def start_calls() -> None:
            # No task is kept in this frame: a finished call's answer would stay alive with it.
            async for batch in request_iterator:
                for call in batch.calls:
                    if call.credit:
                        if call.id in running:
                            running[call.id][1].credit(call.credit)
                    elif call.cancel:
                        cancel(call.id)
                    else:
                        start(call)

        reading = asyncio.ensure_future(start_calls())
        reading.add_done_callback(lambda _: ready.set())
        try:
            while True:
                await ready.wait()
                ready.clear()
                if results.results:
                    batch, results = results, hop_pb2.HopResults()
                    await context.write(batch)
                elif reading.done() and not running:
                    reading.result()  # how the facade's stream ended: a failure ends this one too
                    return
        finally:
            reading.cancel()
            for task, _ in running.values():  # the stream ended under them: their clients are gone
                task.cancel()
