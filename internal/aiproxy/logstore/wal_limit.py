"""Keeping a partition's -wal near its usual size while searches read it without pause.

SQLite's automatic checkpoints are PASSIVE: they copy into the file only the pages no reader
still needs, and the -wal starts over from its beginning only when no reader is in it. Under
searches that never stop (the gateway's LogService, a dashboard polling) some reader always is,
so the -wal of the partition being written grew by every row ingested (173 MB while ingesting
20,000 rows into a 138 MB file, 19 MB without readers). Once it holds LIMIT_CHECKPOINTS times
the pages of an automatic checkpoint, ingest, `dialogs assign`, `fts build|rebuild` and `bundle
import` run a TRUNCATE checkpoint after a batch: it waits (SQLite's busy handler) for the readers
to move to the latest snapshot and leave the -wal, which new readers do at once (they are never
blocked), then empties it. Other writers wait meanwhile, so the wait is bounded well below theirs
(the busy timeout); a reader that holds on longer leaves it for the next batch.
"""

from __future__ import annotations

from pathlib import Path

from peewee import SqliteDatabase

from aiproxy.logstore.settings import LogStoreSettings

LIMIT_CHECKPOINTS = 4  # without readers the -wal stayed under ~5 checkpoints' pages (one batch's)
WAIT_SHARE = 5  # the checkpoint waits at most this fraction of the busy timeout for readers


def wal_bytes(database: Path) -> int:
    """The size of `database`'s -wal (0 when it has none)."""
    try:
        return database.with_name(database.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


def limit_wal(db: SqliteDatabase, settings: LogStoreSettings) -> None:
    """After a write transaction: empty the -wal when it has outgrown its limit. A no-op inside a
    transaction (a step of the caller's own: a checkpoint cannot empty the -wal there), and while
    automatic checkpoints are off (LOGDB_WAL_AUTOCHECKPOINT_PAGES=0: the operator checkpoints)."""
    pages = settings.wal_autocheckpoint_pages
    if not pages or db.in_transaction():
        return
    page_size = db.execute_sql("PRAGMA page_size").fetchone()[0]
    if wal_bytes(db.file) <= LIMIT_CHECKPOINTS * pages * page_size:
        return
    conn = db.connection()
    conn.execute(f"PRAGMA busy_timeout = {settings.busy_timeout_ms // WAIT_SHARE}")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # readers still in it: (1, …), tried next time
    finally:
        conn.execute(f"PRAGMA busy_timeout = {settings.busy_timeout_ms}")
