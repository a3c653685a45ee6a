"""Background ingestion inside the gateway: every LOGDB_LIVE_INTERVAL_S (1 s) the request log
files under `<log_dir>/requests/` are ingested from their checkpoints in a worker thread, so a
search sees a request within seconds and the event loop never waits on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from loguru import logger

from aiproxy.logstore.ingest import IngestReport, ingest
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.store import Store


class LiveIngester:
    def __init__(self, store: Store, requests_dir: Path) -> None:
        self.store = store
        self.requests_dir = Path(requests_dir)

    def run_once(self) -> IngestReport:
        files = sorted(self.requests_dir.glob("*.jsonl")) if self.requests_dir.is_dir() else []
        report = ingest(self.store, self.requests_dir, files=files)
        if report.records_corrupt or report.problems:
            logger.warning("log store: {} problem records: {}", len(report.problems), report.problems[:3])
        return report

    async def run(self, stop_event: asyncio.Event, interval_s: float) -> None:
        while not stop_event.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # keep serving requests: the next round retries
                logger.exception("log store: live ingest failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=interval_s)


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
