"""Opening log store files: pragmas, schema creation and migrations (`PRAGMA user_version`).

Every file (partition, control DB, merge target) gets the same schema. Version 0 is an empty
file or one the seed wrote; migration 1 creates what is missing and adds the new columns to
seed tables in place. Later schema changes append a function to MIGRATIONS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from peewee import OperationalError, SqliteDatabase

from aiproxy.logstore.models import BASE_MODELS, Request, RequestTextIndex
from aiproxy.logstore.settings import LogStoreSettings

FTS_TABLE = RequestTextIndex._meta.table_name

# Peewee binds models to a database by mutating the model class; schema work is rare, so a
# process-wide lock keeps concurrent threads from seeing each other's binding.
_schema_lock = threading.Lock()


def _pragmas(settings: LogStoreSettings) -> list[tuple[str, object]]:
    pragmas: list[tuple[str, object]] = [
        ("journal_mode", "wal"),
        ("synchronous", "normal"),
        ("busy_timeout", settings.busy_timeout_ms),
        ("foreign_keys", 1),
        ("wal_autocheckpoint", settings.wal_autocheckpoint_pages),
    ]
    if settings.sqlite_cache_kb:  # 0: SQLite's default cache size
        pragmas.append(("cache_size", -settings.sqlite_cache_kb))
    return pragmas


def _migrate_1(db: SqliteDatabase) -> None:
    """Create the tables and indexes; add this version's columns to tables the seed created."""
    with db.bind_ctx(BASE_MODELS):
        for model in BASE_MODELS:
            model._schema.create_table(safe=True)
            table = model._meta.table_name
            present = {c.name for c in db.get_columns(table)}
            for field in model._meta.sorted_fields:
                if field.column_name not in present:
                    db.execute_sql(_add_column_ddl(table, field))
            model._schema.create_indexes(safe=True)


def _add_column_ddl(table: str, field) -> str:
    sql_type = {"INT": "INTEGER", "FLOAT": "REAL"}.get(field.field_type, "TEXT")
    # SQLite cannot add a NOT NULL column without a default: added columns are nullable.
    return f'ALTER TABLE "{table}" ADD COLUMN "{field.column_name}" {sql_type}'


MIGRATIONS: list[Callable[[SqliteDatabase], None]] = [_migrate_1]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: SqliteDatabase) -> int:
    """Bring a file to SCHEMA_VERSION; returns the version it had. Each step is one transaction."""
    with _schema_lock:
        found = db.execute_sql("PRAGMA user_version").fetchone()[0]
        for version in range(found, SCHEMA_VERSION):
            with db.atomic():
                MIGRATIONS[version](db)
                db.execute_sql(f"PRAGMA user_version = {version + 1}")
        return found


def open_database(path: Path, settings: LogStoreSettings, *, create: bool = True) -> SqliteDatabase:
    """Open (and, with `create`, create and migrate) a log store file with the store's pragmas."""
    path = Path(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise FileNotFoundError(path)
    db = SqliteDatabase(str(path), pragmas=_pragmas(settings), check_same_thread=False, timeout=settings.busy_timeout_ms / 1000)
    _connect(db, settings.busy_timeout_ms / 1000)
    if create:
        migrate(db)
    return db


def _connect(db: SqliteDatabase, timeout_s: float) -> None:
    """Connect and apply the pragmas, waiting out "database is locked" up to the busy timeout.
    The pragmas can meet a lock that SQLite's busy handler does not wait for: it happened when the
    live ingester created the day's new partition while a search opened the same file."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            db.connect(reuse_if_open=True)
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def has_fts(db: SqliteDatabase) -> bool:
    return db.execute_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FTS_TABLE,)).fetchone() is not None


def create_fts(db: SqliteDatabase) -> None:
    with _schema_lock, db.bind_ctx([RequestTextIndex]):
        RequestTextIndex.create_table(safe=True)


def drop_fts(db: SqliteDatabase) -> None:
    db.execute_sql(f'DROP TABLE IF EXISTS "{FTS_TABLE}"')


REQUEST_COLUMNS: tuple[str, ...] = tuple(f.column_name for f in Request._meta.sorted_fields)
