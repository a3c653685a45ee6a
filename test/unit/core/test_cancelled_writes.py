"""A gRPC client that cancels a stream, or whose deadline passes, while the servicer's write is in
flight: grpc.aio cancels the servicer's task, and grpcio never frees the batch of a write whose
awaiting task is cancelled (grpc/grpc#43360), ~0.3 KB per such stream. gRPC's core fails the
pending write at once, the call having ended: the servicer must let it end so, reading its batch,
before the cancellation goes on."""

import asyncio
import time

import pytest

from aiproxy.errors import ClientStalled, ServerShuttingDown
from aiproxy.rpc.server import _writing
from aiproxy.rpc.steps import sent


class _Call:
    """A servicer context whose write is a batch that completes only when the test says so."""

    def __init__(self) -> None:
        self.batch: asyncio.Future | None = None
        self.writing = asyncio.Event()
        self.outcome = "pending"

    async def write(self, message) -> None:
        self.batch = asyncio.get_running_loop().create_future()
        self.writing.set()
        try:
            await self.batch
        except asyncio.CancelledError:
            self.outcome = "abandoned"  # the leak: nothing will read the batch
            raise
        except RuntimeError:
            self.outcome = "failed"  # read: the batch is freed
            raise

    def fail_batch(self) -> None:
        """What gRPC's core does to a pending batch once the call has ended."""
        if not self.batch.done():
            self.batch.set_exception(RuntimeError("the call has ended"))


def _chat_stream_write(call: _Call):
    return sent(call.write(b"chunk"), 30.0)


def _generator_stream_write(call: _Call):
    async def messages(request, context):
        yield b"bundle chunk"

    return _writing(messages, 30.0)(None, call)


async def _cancel_mid_write(start) -> _Call:
    call = _Call()
    task = asyncio.ensure_future(start(call))
    await call.writing.wait()
    task.cancel()
    await asyncio.sleep(0)
    call.fail_batch()
    with pytest.raises(asyncio.CancelledError):
        await task
    return call


@pytest.mark.parametrize("start", [_chat_stream_write, _generator_stream_write])
def test_a_write_in_flight_when_the_client_gives_up_ends_with_its_batch_read(start):
    call = asyncio.run(_cancel_mid_write(start))
    assert call.outcome == "failed"


def test_a_client_that_reads_nothing_still_ends_as_stalled():
    async def stalled() -> _Call:
        call = _Call()
        with pytest.raises(ClientStalled):
            await sent(call.write(b"chunk"), 0.05)
        return call

    assert asyncio.run(stalled()).outcome == "abandoned"


def test_the_shutdown_deadline_does_not_wait_for_a_write():
    """The shutdown's own cancellation leaves the call open: a write to a client that reads nothing
    would never end."""

    async def shutdown() -> float:
        call = _Call()
        task = asyncio.ensure_future(_chat_stream_write(call))
        await call.writing.wait()
        started = time.monotonic()
        task.cancel(ServerShuttingDown.CANCEL_MESSAGE)
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(shutdown()) < 0.5
