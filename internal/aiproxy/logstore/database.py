"""Opening log store files: pragmas, schema creation and migrations (`PRAGMA user_version`).

Every file (partition, control DB, merge target) gets the same schema. Version 0 is an empty
file or one the seed wrote; migration 1 creates what is missing and adds the new columns to
seed tables in place. Later schema changes append a function to MIGRATIONS.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
from peewee import DatabaseError, OperationalError, SqliteDatabase

from aiproxy.logstore.damage import sqlite_code
from aiproxy.logstore.fragments import thread_hashes
from aiproxy.logstore.models import BASE_MODELS, BuildingTextIndex, Request, RequestTextIndex
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.stoppable import allow_stops, refuse_if_stopped

T = TypeVar("T")

FTS_TABLE = RequestTextIndex._meta.table_name
BUILDING_TABLE = BuildingTextIndex._meta.table_name  # an index being built (fts.py)
_FTS_MODELS = {FTS_TABLE: RequestTextIndex, BUILDING_TABLE: BuildingTextIndex}

# Peewee binds models to a database by mutating the model class; schema work is rare, so a
# process-wide lock keeps concurrent threads from seeing each other's binding.
_schema_lock = threading.Lock()


# SQLite keeps a TEXT value's bytes as they were written: a byte flipped on disk, or in a bundle member
# whose sums were recomputed, is not UTF-8, and Python's decoding made every read of that row a
# traceback ("Could not decode to UTF-8 column ...": each later search of its days). It reads as
# U+FFFD instead; the stored bytes and the rest of the value stay as they are.
_TEXT = functools.partial(str, encoding="utf-8", errors="replace")


class _Database(SqliteDatabase):
    """Every connection to a store file lets a stop end its statements part-way (stoppable.py) and
    reads text that is not UTF-8 (`_TEXT`)."""

    def _add_conn_hooks(self, conn: sqlite3.Connection) -> None:
        super()._add_conn_hooks(conn)
        allow_stops(conn)
        conn.text_factory = _TEXT

    def execute_sql(self, sql, params=None):
        refuse_if_stopped()
        return super().execute_sql(sql, params)


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
            if model is Request and present and "thread_prefix_hash" not in present:
                _add_thread_hashes(db)


def _add_thread_hashes(db: SqliteDatabase) -> None:
    """Give the rows of a seed table the thread hashes ingest gives every row, so that
    `dialogs assign` threads their conversations by content, not only by the window rule."""
    last = 0
    while rows := db.execute_sql(
        "SELECT rowid, request_json, response_json FROM requests WHERE rowid > ? ORDER BY rowid LIMIT 1000", (last,)
    ).fetchall():
        updates = []
        for rowid, request_json, response_json in rows:
            try:
                hashes = thread_hashes(orjson.loads(request_json or "null"), orjson.loads(response_json or "null"))
            except orjson.JSONDecodeError:
                continue  # not JSON: no messages to thread, as for ingest
            updates.append((hashes.prefix, hashes.next, hashes.tail_prefix, hashes.tail_next, rowid))
        db.connection().executemany(
            "UPDATE requests SET thread_prefix_hash = ?, thread_next_hash = ?, thread_tail_prefix_hash = ?,"
            " thread_tail_next_hash = ? WHERE rowid = ?",
            updates,
        )
        last = rows[-1][0]


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
    # uri=True: a plain path stays a path; it lets ATTACH take read_only_uris (merge.py)
    db = _Database(str(path), pragmas=_pragmas(settings), check_same_thread=False, uri=True,
                        timeout=settings.busy_timeout_ms / 1000)
    _connect(db, settings.busy_timeout_ms / 1000)
    if create:
        migrate(db)
    db.file, db.immutable_stamp = path, None
    return db


def read_only_uris(path: Path) -> list[str]:
    """SQLite URIs that read a file this process cannot write (a read-only mount, another user's
    store), in the order to try them. `mode=ro` reads it as any reader does, locks and all, so it
    sees what a live writer commits; in WAL mode it needs the -shm file, existing or creatable.
    When neither is possible, `immutable=1` reads the main file alone without locks or -shm. That
    is only right while nothing writes the file and no commit waits in a -wal (SQLite would ignore
    it), so it is offered only when no -wal (with content) and no -shm exist: no process has the
    file open in WAL mode. `Store` reopens it when that changes (`file_stamp`)."""
    base = "file:" + urllib.parse.quote(str(Path(path).absolute()))
    uris = [f"{base}?mode=ro"]
    if file_stamp(path)[1:] == (0, False):
        uris.append(f"{base}?mode=ro&immutable=1")
    return uris


def file_stamp(path: Path) -> tuple[tuple[int, int] | None, int, bool]:
    """(size and mtime of the file, bytes in its -wal, whether its -shm exists): what must not
    change while a file is read with `immutable=1`."""
    path = Path(path)
    try:
        stat = path.stat()
        main = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        main = None
    try:
        wal = path.with_name(path.name + "-wal").stat().st_size
    except OSError:
        wal = 0
    return main, wal, path.with_name(path.name + "-shm").exists()


def first_read_only(path: Path, attempt: Callable[[str], T]) -> T:
    """`attempt(uri)` with each of read_only_uris(path) in turn: what the first that can read gives,
    else the last one's error. An attempt that fails closes what it opened. A file another process
    kept locked past the busy timeout, or a statement a stop interrupted, ends it there: the next
    way, `immutable=1`, would read the file in spite of the lock (a write half done), or go on
    after the stop."""
    error: Exception | None = None
    for uri in read_only_uris(path):
        try:
            return attempt(uri)
        except (sqlite3.Error, DatabaseError) as exc:
            if sqlite_code(exc) in _NOT_A_WAY_ROUND:
                raise
            error = exc
    raise error


_NOT_A_WAY_ROUND = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_INTERRUPT})


def open_read_only(path: Path, settings: LogStoreSettings) -> SqliteDatabase:
    """Open an existing file read-only (read_only_uris), without migrating it: any write through it
    fails with SQLITE_READONLY. `db.immutable_stamp` is the file's stamp when opened immutable."""

    def attempt(uri: str) -> SqliteDatabase:
        db = _Database(uri, uri=True, pragmas=_pragmas(settings)[1:], check_same_thread=False,
                            timeout=settings.busy_timeout_ms / 1000)  # [1:]: journal_mode would write
        try:
            _connect(db, settings.busy_timeout_ms / 1000)
            db.execute_sql(_FIRST_READ)
        except DatabaseError:
            db.close()
            raise
        db.file = Path(path)
        db.immutable_stamp = file_stamp(path) if "immutable=1" in uri else None
        return db

    return first_read_only(path, attempt)


def connect_read_only(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A plain sqlite3 connection that only reads `path` (bundle snapshots)."""

    def attempt(uri: str) -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s)
        conn.text_factory = _TEXT
        try:
            conn.execute(_FIRST_READ)
        except sqlite3.Error:
            conn.close()
            raise
        except UnicodeDecodeError:
            conn.close()
            raise schema_not_utf8() from None
        return conn

    return first_read_only(path, attempt)


_FIRST_READ = "SELECT count(*) FROM sqlite_master"  # SQLite opens the file (and its -shm) lazily


def schema_version(db: SqliteDatabase) -> int:
    return db.execute_sql("PRAGMA user_version").fetchone()[0]


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
        except UnicodeDecodeError:
            db.close()
            raise schema_not_utf8() from None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def schema_not_utf8() -> sqlite3.DatabaseError:
    """The SQLITE_CORRUPT error a UnicodeDecodeError out of SQLite's first read of a file stands for:
    a damaged schema holding bytes that are not UTF-8, which SQLite's "malformed database schema"
    message quotes and Python cannot decode (no damage handling took the UnicodeDecodeError for a
    damaged file: it was a traceback in every command)."""
    corrupt = sqlite3.DatabaseError("malformed database schema (not UTF-8 text)")
    corrupt.sqlite_errorcode, corrupt.sqlite_errorname = sqlite3.SQLITE_CORRUPT, "SQLITE_CORRUPT"
    return corrupt


def has_fts(db: SqliteDatabase, table: str = FTS_TABLE) -> bool:
    return db.execute_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def indexes_new_rows(db: SqliteDatabase, fts_enabled: bool) -> bool:
    """Whether rows written now get their FTS fragments: always in a partition that has its index,
    and with FTS on in one that holds no rows yet. A partition holding rows without an index (FTS
    was off, or `fts drop`) stays without one until `logdb fts build`: an index is whole or absent,
    never a part of the rows that search would take for all of them. Asked under the write lock."""
    if has_fts(db):
        return True
    return fts_enabled and db.execute_sql("SELECT NOT EXISTS (SELECT 1 FROM requests)").fetchone()[0] == 1


def create_fts(db: SqliteDatabase, table: str = FTS_TABLE) -> None:
    model = _FTS_MODELS[table]
    with _schema_lock, db.bind_ctx([model]):
        model.create_table(safe=True)


def drop_fts(db: SqliteDatabase, table: str = FTS_TABLE) -> None:
    db.execute_sql(f'DROP TABLE IF EXISTS "{table}"')


REQUEST_COLUMNS: tuple[str, ...] = tuple(f.column_name for f in Request._meta.sorted_fields)
