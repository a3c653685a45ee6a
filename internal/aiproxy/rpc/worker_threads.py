"""Work a gRPC call runs in a worker thread, stopped when the call ends before it does."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from aiproxy.logstore.stoppable import stopping_on

T = TypeVar("T")


async def in_stoppable_thread(work: Callable[[threading.Event], T]) -> T:
    """work(stop) in a worker thread of the default executor. When the call is cancelled (its client
    gone, its deadline passed, the gateway stopping) `stop` is set: the thread's SQLite statements
    abort part-way (logstore.stoppable) and `work` may check it between steps of its own. The
    cancellation waits for the thread to end, so the call's clean-up never races its writes; before,
    the thread ran on to the end, and a few cancelled searches of a large store took every thread
    the executor has (min(32, cores + 4)), every other LogService call waiting for them."""
    stop = threading.Event()

    def run() -> T:
        with stopping_on(stop):
            return work(stop)

    running = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)  # how it ended ('interrupted') is no one's answer now
        raise
