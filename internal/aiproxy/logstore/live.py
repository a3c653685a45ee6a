"""Background ingestion inside the gateway: every LOGDB_LIVE_INTERVAL_S (1 s) the request log
files under `<log_dir>/requests/` are ingested from their checkpoints in a worker thread, so a
search sees a request within seconds and the event loop never waits on SQLite.

With several gateway workers on one store, one process ingests at a time: the first to take
the lock file `<LOGDB_DIR>/.live-ingest.lock` keeps it; the others try again each round and
take over when its holder exits (the OS drops the lock with the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from pathlib import Path

from loguru import logger

from aiproxy.logstore.damage import StoreBusy
from aiproxy.logstore.ingest import IngestReport, IngestStopped, ingest
from aiproxy.logstore.settings import LogStoreConfigError, LogStoreSettings
from aiproxy.logstore.store import Store

LOCK_FILE = ".live-ingest.lock"
# While a round fails, or a damaged partition holds its day back (each round would read the request
# logs again from the checkpoint before that day's rows), the pause between rounds doubles up to this.
MAX_RETRY_S = 300.0


def adopt_relative_checkpoints(store: Store) -> int:
    """Make the checkpoints an earlier gateway stored under relative paths (`logs/requests/…`, with
    the default LOG_DIR=logs) absolute, as `logdb ingest` stores them, so neither re-reads those
    files. When the CLI has since made its own row for the same file, the one further on stays (a
    resume point is checked against the file's head before use anyway). Returns the rows changed."""
    control = store.control()
    with control.atomic("IMMEDIATE"):
        rows = control.execute_sql("SELECT source_path, bytes_ingested FROM ingest_sources").fetchall()
        relative = [(path, offset) for path, offset in rows if not os.path.isabs(path)]
        offsets = dict(rows)
        for path, offset in relative:
            absolute = str(Path(path).absolute())
            if absolute in offsets and (offsets[absolute] or 0) >= (offset or 0):
                control.execute_sql("DELETE FROM ingest_sources WHERE source_path = ?", (path,))
                continue
            control.execute_sql("DELETE FROM ingest_sources WHERE source_path = ?", (absolute,))
            control.execute_sql("UPDATE ingest_sources SET source_path = ? WHERE source_path = ?", (absolute, path))
            offsets[absolute] = offset
    return len(relative)


class LiveIngester:
    def __init__(self, store: Store, requests_dir: Path) -> None:
        self.store = store
        # Absolute, as `logdb ingest` names files: both then find the same checkpoints.
        self.requests_dir = Path(requests_dir).absolute()
        self._lock = None
        self._adopted = False
        self._problems: list[str] = []  # the last round's, said once while they stay the same
        self._held_back = False  # the last round left rows of a damaged partition in the logs
        self._stopping = threading.Event()

    def _holds_lock(self) -> bool:
        if self._lock is None:
            self.store.base.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.store.base / LOCK_FILE, "a+b")  # held while the process lives
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def run_once(self) -> IngestReport | None:
        """One round; None when another process is the ingester."""
        if not self._holds_lock():
            return None
        if not self._adopted:
            adopt_relative_checkpoints(self.store)
            self._adopted = True
        files = sorted(f for f in self.requests_dir.glob("*.jsonl") if f.is_file()) if self.requests_dir.is_dir() else []
        # The gateway's stop ends the round at its next record, as a crash would (the checkpoints only
        # ever pass stored rows, and rows stored twice are skipped).
        report = ingest(self.store, self.requests_dir, files=files, stopping=self._stopping)
        held_back = bool(report.unreadable.errors)
        if report.problems and report.problems != self._problems:
            logger.warning("log store: {} problem records, first: {}", len(report.problems), report.problems[:3])
        if self._held_back and not held_back:
            logger.info("log store: the damaged partitions are usable again; the rows held back are stored")
        self._problems, self._held_back = report.problems, held_back
        return report

    async def _round(self, stop_event: asyncio.Event) -> None:
        """run_once in a thread, ended early by the gateway's stop, and waited for even when this task
        is cancelled: the store closes next, and the loop's exit would wait for the thread anyway (a
        first ingest of a large backlog held a stop for minutes)."""
        self._stopping.clear()
        work = asyncio.ensure_future(asyncio.to_thread(self.run_once))
        stopped = asyncio.ensure_future(stop_event.wait())
        try:
            await asyncio.wait((work, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not work.done():
                self._stopping.set()
                await asyncio.wait((work,))
            # Taken also when this task was cancelled: else asyncio logs it as never retrieved.
            error = work.exception() if work.done() and not work.cancelled() else None
        if error is not None and not isinstance(error, IngestStopped):
            raise error

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def run(self, stop_event: asyncio.Event, interval_s: float) -> None:
        pause = interval_s
        try:
            while not stop_event.is_set():
                try:
                    await self._round(stop_event)
                    retry = self._held_back
                except StoreBusy as exc:  # another process's long write: not a failure, nothing to back off from
                    logger.warning("log store: {} {}; the next round goes on from there", exc.path.name, exc.CAUSE)
                    retry = False
                except Exception:  # keep serving requests: a later round retries
                    logger.exception("log store: live ingest failed")
                    retry = True
                pause = min(max(pause * 2, interval_s), MAX_RETRY_S) if retry else interval_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), timeout=pause)
        finally:
            self.close()


def check_live_store(store_settings: LogStoreSettings) -> None:
    """With LOGDB_ENABLED, a LOGDB_DIR the live ingest cannot write in is a configuration error at
    start-up (else the gateway served on and logged a failed round, with a traceback, forever)."""
    if not store_settings.enabled:
        return
    try:
        store_settings.base.mkdir(parents=True, exist_ok=True)
        with open(store_settings.base / LOCK_FILE, "a+b"):  # the file run_once locks
            pass
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise LogStoreConfigError(f"LOGDB_DIR={store_settings.dir} cannot be written ({where}{exc.strerror or exc}):"
                                  " set LOGDB_DIR to a writable directory, or LOGDB_ENABLED=false") from None


async def run_live_ingest(settings, stop_event: asyncio.Event) -> None:
    """Ingest the gateway's own request logs until `stop_event` is set (no-op unless LOGDB_ENABLED)."""
    store_settings = LogStoreSettings.from_mapping(settings.logdb)
    if not store_settings.enabled:
        return
    store = Store(store_settings)
    try:
        await LiveIngester(store, Path(settings.log_dir) / "requests").run(stop_event, store_settings.live_interval_s)
    finally:
        store.close()
