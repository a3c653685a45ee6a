"""Stream writes in a servicer that gRPC may cancel.

grpc.aio cancels a servicer's task when its client cancels the call or its deadline passes. A write
then in flight is a gRPC batch, and grpcio never frees the native memory of a batch whose awaiting
task is cancelled (grpc/grpc#43360, open in grpcio 1.85). By then gRPC's core has ended the call,
which fails the pending batch at once; so `settled` runs the write in a task of its own and lets it
end, reading its batch, before the cancellation goes on (the REST facade's cure, httpapi/hop.py).
Measured on bare grpc.aio, streams cancelled after their first message: 0.31 KB kept per stream
before, 0.13 KB after; the rest stays inside grpcio, whatever the servicer does.

A stream's write also waits while its client reads nothing (gRPC's flow control): `sent` bounds it, and
`end_stream` bounds the wait for the status queued behind what the client has not read. Every server
stream (ChatService's, LogService's CreateBundle) writes through them. A client stream's reads wait as long
for a client that sends nothing (and neither closes nor cancels): `received` bounds them (ImportBundle).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import TypeVar

import grpc

from aiproxy.errors import ClientStalled, GatewayError, RequestTimeout, ServerShuttingDown
from aiproxy.rpc.status import abort_with

T = TypeVar("T")
# How long a cancelled call's step may take to end. gRPC's core ends it at once when the call has
# ended; this only bounds a cancellation that came from elsewhere, the call still open.
SETTLE_SECONDS = 1.0
# How long the status of a stream whose client stalled may wait behind the messages it has not read.
STALLED_STATUS_SECONDS = 0.5


async def settled(step: Awaitable[T], give_up_after: float | None = None) -> T:
    """`step`'s result. TimeoutError, with the step cancelled, once `give_up_after` seconds passed."""
    running = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait((running,), timeout=give_up_after)
    except asyncio.CancelledError as exc:
        # The shutdown's own cancellation leaves the call open (its client may read nothing): no wait.
        if exc.args != (ServerShuttingDown.CANCEL_MESSAGE,):
            await asyncio.wait((running,), timeout=SETTLE_SECONDS)
        _discard(running)
        raise
    if not done:  # a client that reads nothing: its write stays queued, and is cancelled (leaks, once)
        _discard(running)
        raise TimeoutError
    return running.result()


def _discard(running: asyncio.Future) -> None:
    if not running.cancel() and not running.cancelled():
        running.exception()  # how the ended call's step failed: nobody's answer


async def sent(writing: Awaitable[None], send_timeout: float) -> None:
    """A stream write, which waits while the client reads nothing: past `send_timeout`
    (REQUEST_BODY_TIMEOUT_SECONDS) the call ends as ClientStalled, rather than hold what it serves for good."""
    try:
        await settled(writing, send_timeout)
    except TimeoutError:
        raise ClientStalled(
            f"The client read none of its stream for {send_timeout:g} seconds; the gateway ended the call"
            " (the operator sets the limit with REQUEST_BODY_TIMEOUT_SECONDS)."
        ) from None


async def received(requests: AsyncIterable[T], receive_timeout: float) -> AsyncIterator[T]:
    """A client stream's messages. Past `receive_timeout` (REQUEST_BODY_TIMEOUT_SECONDS) without one it ends
    as RequestTimeout, as a REST body does: a client that stopped sending, its connection kept open by other
    calls, held the call and what it holds (an upload's lock) and the shutdown's drain for good."""
    messages = aiter(requests)
    while True:
        try:
            message = await settled(anext(messages), receive_timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(
                f"The client sent nothing more of its stream for {receive_timeout:g} seconds; the gateway ended the"
                " call (the operator sets the limit with REQUEST_BODY_TIMEOUT_SECONDS)."
            ) from None
        yield message


async def end_stream(
    context: grpc.aio.ServicerContext, exc: GatewayError, send_timeout: float, request_id: str | None = None
) -> None:
    """abort_with, for a stream, whose status goes out behind the messages its client has not read yet:
    the call waits for it as for a write, and for a client that stalled already only a moment, then ends
    cancelled. Otherwise a client that read nothing more held the call, and what it serves (an answer kept
    for the request log, a bundle's file and snapshot) and the drain, for as long as its connection had
    other calls. The status stays queued for it."""
    wait = STALLED_STATUS_SECONDS if isinstance(exc, ClientStalled) else send_timeout
    try:
        await settled(abort_with(context, exc, request_id), wait)
    except TimeoutError:
        raise asyncio.CancelledError(exc.message) from None
