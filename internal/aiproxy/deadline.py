"""A bound on an upstream's progress. httpx's read timeout (aiohttp's sock_read) bounds each socket
read, so an upstream that trickles its answer (a byte a second of a JSON body, an event stream of
keep-alive comments that never sends an event) was never timed out, and held its client and a
connection for good. `UpstreamDeadline` bounds the time between the request going out, or the
last sign of progress, and the next one."""

from __future__ import annotations

import asyncio
import math


class UpstreamDeadline:
    """`async with deadline:` ends the block's awaits with TimeoutError once `seconds` pass after
    `sent()` (the request went out) or the last `progress()` without another; 0 means no bound,
    as for the read timeout itself. The time between `pause()` and `resume()`, and outside the
    block, is not counted: the task is then relaying to its client (whose stalls have their own
    bound), so a cancellation there would hit the client's write, not the upstream's read. A
    deadline may be entered again (a stream's answer head, then its events).

    Why not asyncio.timeout rescheduled at each event: a reschedule cancels one timer and pushes
    another on the loop's heap, ~2.5 us, and a stream carries hundreds of events. Here progress
    only stores a time, and the one timer re-arms itself for the stored time when it fires early:
    one timer per `seconds` of a call, whatever its number of events, and no task of its own."""

    __slots__ = ("_seconds", "_due", "_away_since", "_timer", "_loop", "_task", "_cancelling", "_expired")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds or math.inf
        self._due = math.inf  # until sent()
        self._away_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    @property
    def seconds(self) -> float:
        return self._seconds

    async def __aenter__(self) -> UpstreamDeadline:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling()
        self.resume()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.pause()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._expired:
            self._expired = False
            # As asyncio.timeout: our cancellation becomes TimeoutError, unless someone else's came too.
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def sent(self) -> None:
        self._due = self._loop.time() + self._seconds
        if self._timer is None:
            self._arm()

    def progress(self) -> None:
        self._due = self._loop.time() + self._seconds

    def pause(self) -> None:
        self._away_since = self._loop.time()

    def resume(self) -> None:
        if self._away_since is not None:
            self._due += self._loop.time() - self._away_since
            self._away_since = None
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        if self._due < math.inf:
            self._timer = self._loop.call_at(self._due, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._away_since is not None:
            return  # resume() re-arms
        if self._loop.time() < self._due:
            self._arm()  # progress came since this timer was set
            return
        self._expired = True
        self._task.cancel()  # here, not in a callback of its own: by then the task may be away
