"""Awaiting the cell's hop (facade -> servicers) from a handler that aiohttp may cancel.

aiohttp cancels a handler when its client goes away, and the cancellation reaches whatever the
handler awaits. When that is a gRPC batch (a unary call's answer, a stream's next message),
grpcio never frees the batch's native memory, about 2 KB per call, since nothing reads its result
(grpc/grpc#43360, open in grpcio 1.85): a gateway whose clients often give up (a chat UI's stop
button, client timeouts) would grow without bound. So the facade awaits the hop through
`answer` and `next_message`: the step runs shielded, and a cancellation cancels the RPC in gRPC's
core, which ends the step at once and reads its batch, before the handler goes on being cancelled.
The servicer and its upstream call are cancelled as promptly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import grpc

T = TypeVar("T")
# grpc.aio's own details for a call its client cancelled.
_CANCELLED = "Locally cancelled by application!"


async def answer(call: grpc.aio.UnaryUnaryCall):
    """The answer of a unary call."""
    return await _settled(call, call)


async def next_message(call: grpc.aio.UnaryStreamCall):
    """A server stream's next message, or grpc.aio.EOF."""
    return await _settled(call, call.read())


async def _settled(call: grpc.aio.Call, step: Awaitable[T]) -> T:
    running = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        _cancel_in_core(call)
        await asyncio.wait((running,))
        if not running.cancelled():
            running.exception()  # the cancelled call's own error: nothing to report
        raise


def _cancel_in_core(call: grpc.aio.Call) -> None:
    """Cancel the RPC in gRPC's core only. grpc.aio's cancel() of a unary call also cancels the task
    that awaits the call's batch, which is the leak."""
    core = getattr(call, "_cython_call", None)
    if core is None:  # a grpcio that renamed it: cancel() still cancels, leak and all
        call.cancel()
    elif not core.done():
        core.cancel(_CANCELLED)
