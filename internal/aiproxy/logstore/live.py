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
from pathlib import Path

from loguru import logger

from aiproxy.logstore.ingest import IngestReport, ingest
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.store import Store

LOCK_FILE = ".live-ingest.lock"


class LiveIngester:
    def __init__(self, store: Store, requests_dir: Path) -> None:
        self.store = store
        self.requests_dir = Path(requests_dir)
        self._lock = None

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
        files = sorted(self.requests_dir.glob("*.jsonl")) if self.requests_dir.is_dir() else []
        report = ingest(self.store, self.requests_dir, files=files)
        if report.problems:
            logger.warning("log store: {} problem records, first: {}", len(report.problems), report.problems[:3])
        return report

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def run(self, stop_event: asyncio.Event, interval_s: float) -> None:
        try:
            while not stop_event.is_set():
                try:
                    await asyncio.to_thread(self.run_once)
                except Exception:  # keep serving requests: the next round retries
                    logger.exception("log store: live ingest failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), timeout=interval_s)
        finally:
            self.close()


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
