"""CellHop.Exchange: the REST facade's CreateChatCompletion calls, many over one stream.

grpc.aio spends ~250 us of CPU on each unary call between the facade and its ChatService (both ends in
this process), and ~10 us on a call carried as an item of an open stream's messages, where the
calls that are ready together travel in one message (docs/architecture.md, "Unary calls over the
gRPC hop"). Each carried call runs the server's own handler for CreateChatCompletion, interceptors
included, in a task of its own with a context of its own: its key is checked, it is tracked for the
shutdown and request-logged exactly as the RPC would be, and its result is the status, details,
trailing metadata and answer that RPC would have ended with.
"""

from __future__ import annotations

import asyncio

import grpc

from aiproxypb.v1 import hop_pb2, hop_pb2_grpc

CARRIED_METHOD = "/aiproxy.v1.ChatService/CreateChatCompletion"


class CarriedCallContext:
    """What a carried call's handlers use of grpc.aio's ServicerContext. The facade sets no deadline."""

    __slots__ = ("_metadata", "_peer", "_cancelled", "code", "details", "trailing_metadata")

    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer
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


def _add_result(results: hop_pb2.HopResults, call_id: int, context: CarriedCallContext, answer) -> None:
    result = results.results.add(id=call_id, code=context.code.value[0], details=context.details)
    if answer is not None:
        result.response = answer.SerializeToString()
    for key, value in context.trailing_metadata:
        result.trailing_metadata.add(key=key, value=value if isinstance(value, bytes) else value.encode())


class CellHopServicer(hop_pb2_grpc.CellHopServicer):
    def __init__(self) -> None:
        self._handler: grpc.RpcMethodHandler | None = None

    def carry(self, handler: grpc.RpcMethodHandler) -> None:
        """The server's handler of CARRIED_METHOD, its interceptors applied (rpc.server.GrpcServer)."""
        self._handler = handler

    async def Exchange(self, request_iterator, context):
        run, parse = self._handler.unary_unary, self._handler.request_deserializer
        peer = context.peer()
        running: dict[int, tuple[asyncio.Task, CarriedCallContext]] = {}
        ready = asyncio.Event()  # results to send, or the facade's stream ended
        results = hop_pb2.HopResults()

        def finished(call_id: int, carried: CarriedCallContext, task: asyncio.Task) -> None:
            running.pop(call_id, None)
            ready.set()
            if task.cancelled():  # its client went away: nobody waits for it
                return
            error = task.exception()
            if error is None:
                _add_result(results, call_id, carried, task.result())
            elif isinstance(error, grpc.aio.AbortError):  # the interceptors end every failure so
                _add_result(results, call_id, carried, None)
            else:
                carried.code, carried.details = grpc.StatusCode.UNKNOWN, "the call failed"
                _add_result(results, call_id, carried, None)

        def start(call: hop_pb2.HopCall) -> None:
            call_id, carried = call.id, CarriedCallContext(tuple(call.metadata.items()), peer)
            task = asyncio.ensure_future(run(parse(call.request), carried))
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
                    if call.cancel:
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
