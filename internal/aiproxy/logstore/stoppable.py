"""SQLite statements that a stop ends part-way, not only once they return.

One statement is one C call: seconds for a ranked search over a large index, minutes for merge's
INSERT…SELECT of a large partition. A gRPC call that ended (its client cancelled, its deadline
passed) left its statement running in a worker thread, a few of them enough to take every thread of
the executor that all LogService calls share; and as Python runs signal handlers only between
bytecodes, logdb's Ctrl-C/SIGTERM acted only once the statement returned.

Every connection the log store opens (`allow_stops`) calls `_progress` every PROGRESS_STEPS virtual
machine steps. That is Python code, so a signal handler gets its chance there: its exception
(logdb's Stopped, noted by `stop_raised`) makes SQLite abort the statement, and sqlite3 turns it into
OperationalError 'interrupted', clearing the original one; `raise_stop` maps that back. A thread
running in `stopping_on(event)` has its statements abort there once `event` is set (sqlite3's
OperationalError 'interrupted'), and (`refuse_if_stopped`) every later statement fail the same way:
a loop of statements too short to reach a progress call (a search looking up request ids 512
fragments at a time, seconds of them on a large index) ends at its next statement.
"""

from __future__ import annotations

import contextlib
import contextvars
import sqlite3
import threading
from collections.abc import Iterator

# ~2-5 ms of SQLite work (20-50 M steps/s measured on FTS5 and scans): a stop acts within that, and
# the callback (0.2 us, and the GIL) costs nothing measurable (docs/logstore.md).
PROGRESS_STEPS = 100_000
# Pages per step of a backup-API copy: 4 MiB, ~10 ms at the 400-450 MB/s measured, as fast as one step.
BACKUP_STEP_PAGES = 1024

_event: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("statement_stop", default=None)
_raised: list[BaseException] = []  # the stop a signal handler raised in this process, while its handler is set


def allow_stops(conn: sqlite3.Connection) -> None:
    conn.set_progress_handler(_progress, PROGRESS_STEPS)


def _progress() -> bool:
    event = _event.get()
    return event is not None and event.is_set()  # True: SQLite aborts the statement


@contextlib.contextmanager
def stopping_on(event: threading.Event) -> Iterator[None]:
    """Inside (in this thread, or this context), statements abort once `event` is set."""
    token = _event.set(event)
    try:
        yield
    finally:
        _event.reset(token)


def refuse_if_stopped() -> None:
    """SQLite's 'interrupted' error before a statement starts, once this thread's stop is set."""
    if _progress():
        interrupted = sqlite3.OperationalError("interrupted")
        interrupted.sqlite_errorcode, interrupted.sqlite_errorname = sqlite3.SQLITE_INTERRUPT, "SQLITE_INTERRUPT"
        raise interrupted


def stop_event() -> threading.Event | None:
    """The event of the `stopping_on` block this runs in, if any: for work that starts threads of its own."""
    return _event.get()


def stop_raised(stop: BaseException | None) -> BaseException | None:
    """Note `stop` (a signal handler's exception, about to be raised; None: the handler is gone) as
    what ended a statement it interrupts."""
    _raised[:] = [stop] if stop is not None else []
    return stop


def raise_stop(exc: BaseException) -> None:
    """Raise the stop noted by stop_raised instead of `exc` when `exc` is (or came from) the error of a
    statement it interrupted: for every place that turns SQLite's errors into its own, or into a verdict
    on a file ('damaged'), so that a stop mid-statement ends the command as one between statements does."""
    if _raised and _interrupted(exc):
        raise _raised[0] from None


def _interrupted(exc: BaseException | None) -> bool:
    for _ in range(10):  # peewee wraps sqlite3's error (orig); callers raise their own from it
        if exc is None:
            return False
        if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def backup_in_steps(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    """source.backup(target), a stop acting between steps of BACKUP_STEP_PAGES pages (a signal handler
    gets its chance in the callback; this thread's stop is 'interrupted'): in one step, backup()'s
    default, the copy is one C call that no progress handler reaches. `source` holds one read
    transaction throughout, so that every step reads the snapshot one step would: without it SQLite
    starts the copy over whenever another connection commits to the source (live ingest, every second)."""
    source.execute("BEGIN")
    try:
        source.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the read transaction starts at a read
        source.backup(target, pages=BACKUP_STEP_PAGES, progress=lambda *_: refuse_if_stopped())
    finally:
        source.rollback()
