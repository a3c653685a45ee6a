"""Awaiting the cell's hop (facade -> servicers) from a handler that aiohttp may cancel.

aiohttp cancels a handler when its client goes away, and the cancellation reaches whatever the
handler awaits. When that is a gRPC batch (a unary call's answer, a stream's next message),
grpcio never frees the batch's native memory, about 2 KB per call, since nothing reads its result
(grpc/grpc#43360, open in grpcio 1.85): a gateway whose clients often give up (a chat UI's stop
button, client timeouts) would grow without bound. So the facade awaits the hop through
`answer` and `next_message`, which never let a cancellation reach grpc.aio's own awaits: it cancels
the RPC in gRPC's core instead, which ends the batch, whose awaiting task then reads and frees it.
The servicer and its upstream call are cancelled as promptly as before.

Its chat calls the facade sends through httpapi.carried_calls, as items of one CellHop.Exchange
stream: a cancellation there is a message, and no gRPC batch is abandoned. `answer` and
`next_message` serve the RPCs it still makes: the model listings, and chat calls too large to share
the stream.
"""

from __future__ import annotations

import asyncio

import grpc

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
