"""The bundle RPCs' archive threads stop with their call."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aiproxy.rpc.bundle_rpcs import _in_thread


def test_a_cancelled_call_stops_its_archive_thread_at_the_next_progress_step():
    """Was: asyncio.to_thread ran the whole bundle on after the call was cancelled, and the
    gateway's exit waited for it."""
    steps, ended = [], threading.Event()

    def archive(progress):
        try:
            for _ in range(500):  # 5 s of work
                time.sleep(0.01)
                progress(16384)
                steps.append(1)
        finally:
            ended.set()

    async def cancel_soon():
        call = asyncio.ensure_future(_in_thread(archive))
        await asyncio.sleep(0.2)
        call.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await call
        return time.monotonic() - started

    waited = asyncio.run(cancel_soon())
    assert ended.is_set() and waited < 0.5  # the thread had stopped when the cancellation completed
    assert len(steps) < 100


def test_an_uncancelled_call_returns_what_the_work_returns():
    assert asyncio.run(_in_thread(lambda *, progress, n: (progress(1), n)[1], n=7)) == 7
