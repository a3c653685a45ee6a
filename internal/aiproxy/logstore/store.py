"""A log store directory: its settings, server id, control DB and partition files.

One `Store` per process and directory. Databases are opened (created, migrated) once and
cached; peewee gives each thread its own connection to each file, so ingest workers and the
LogService can use one Store concurrently.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from peewee import SqliteDatabase

from aiproxy.logstore import partitions
from aiproxy.logstore.damage import (
    READ_ONLY_ADVICE,
    PartitionUnreadable,
    access_problem,
    converted,
    is_access_error,
)
from aiproxy.logstore.database import (
    SCHEMA_VERSION,
    file_stamp,
    open_database,
    open_read_only,
    schema_version,
)
from aiproxy.logstore.server_identity import resolve_server_id, server_row
from aiproxy.logstore.settings import LogStoreSettings

MAX_OPEN = 40  # connections per thread: a month of daily partitions plus a few
# A partition file that stayed empty this long was truncated: the process creating one writes its
# header right after creating it (and SQLite would otherwise take it for a new, empty database).
EMPTY_GRACE_S = 10.0


class Store:
    def __init__(self, settings: LogStoreSettings) -> None:
        self.settings = settings
        self.base = settings.base
        self._dbs: dict[Path, SqliteDatabase] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._server_id: str | None = None
        self._known_servers: set[tuple[Path, str]] = set()

    @property
    def server_id(self) -> str:
        if self._server_id is None:
            self._server_id = resolve_server_id(self.settings)
        return self._server_id

    def database(self, path: Path, *, create: bool = True) -> SqliteDatabase:
        """The file opened (created, migrated) once per Store. A partition SQLite cannot open is
        PartitionUnreadable (damage.py), and so is an old empty one: it is never initialised over."""
        given = Path(path)  # errors name the file as the caller does
        path = given.absolute()
        with self._lock:
            db = self._dbs.get(path)
            if db is not None and db.immutable_stamp is not None and file_stamp(path) != db.immutable_stamp:
                db.close()  # a writer came: immutable reads are no longer right (database.read_only_uris)
                db = None
            if db is None:
                if partitions.is_partition_name(path.name):
                    _refuse_truncated(given)
                    with converted(given):
                        db = self._open_partition(path, given, create)
                else:
                    db = open_database(path, self.settings, create=create)
                self._dbs[path] = db
            return db

    def _open_partition(self, path: Path, given: Path, create: bool) -> SqliteDatabase:
        """Read-write as always; a file this process may not write (a read-only mount, another
        user's store) is opened read-only instead, so reading commands work on it and a write
        fails with SQLITE_READONLY, which `converted` names as a read-only file."""
        try:
            return open_database(path, self.settings, create=create)
        except Exception as exc:
            if not (is_access_error(exc) and path.is_file() and access_problem(path) is not None):
                raise
        db = open_read_only(path, self.settings)
        found = schema_version(db)
        if found < SCHEMA_VERSION:  # reading it needs the columns a migration adds: a write
            db.close()
            why = access_problem(path)[0]
            raise PartitionUnreadable(given, f"its schema (version {found}) must be upgraded to version"
                                      f" {SCHEMA_VERSION} before it is read, which writes it ({why})",
                                      advice=READ_ONLY_ADVICE)
        return db

    @contextmanager
    def connected(self, path: Path) -> Iterator[SqliteDatabase]:
        """A partition for one unit of work. Each thread keeps its MAX_OPEN most recently used
        connections open (opening costs pragmas, closing the last one checkpoints the WAL) and
        closes older ones, so scanning hundreds of partitions never holds hundreds of caches.
        An error saying the file cannot be read or changed, when opening it or anywhere in the
        block, comes out as PartitionUnreadable naming this partition."""
        with converted(Path(path)):
            db = self.database(path)
            recent: OrderedDict[Path, SqliteDatabase] = self._local.__dict__.setdefault("recent", OrderedDict())
            recent[db.file] = db
            recent.move_to_end(db.file)
            while len(recent) > MAX_OPEN:
                recent.popitem(last=False)[1].close()
            yield db

    def control(self) -> SqliteDatabase:
        return self.database(partitions.control_path(self.base))

    def partition_path(self, day: date) -> Path:
        return partitions.partition_path(self.base, day, self.settings.partition_granularity)


    def existing(self, since: date | None = None, to: date | None = None) -> list[partitions.PartitionFile]:
        return partitions.discover(self.base, since, to)

    def note_server(self, db: SqliteDatabase, server_id: str) -> None:
        """Insert the `servers` row once per file and server id (seed: in every DB touched)."""
        key = (db.file, server_id)
        if key in self._known_servers:
            return
        db.execute_sql(
            "INSERT OR IGNORE INTO servers (server_id, hostname, env, first_seen_ts) VALUES (?, ?, ?, ?)",
            server_row(server_id, self.settings),
        )
        self._known_servers.add(key)

    def close(self) -> None:
        with self._lock:
            for db in self._dbs.values():
                db.close()
            self._dbs.clear()


def _refuse_truncated(path: Path) -> None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return  # a new partition
    if stat.st_size == 0 and time.time() - stat.st_mtime >= EMPTY_GRACE_S:
        raise PartitionUnreadable(path, "the file is empty (0 bytes): truncated")
