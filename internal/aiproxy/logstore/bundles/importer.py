"""`bundle import`: merge a bundle's ROWS into the destination store, all or nothing.

Stage (the destination is only read):
  1. one streaming pass verifies the archive and copies its partition members into
     `<dest>/incoming/import-*/` under generated names (never under a member's own name);
  2. a bundle or member from a newer schema version is refused, and so is a member with damaged
     pages or without the log schema's columns (members.py);
  3. for every destination partition the rows belong to (the DESTINATION's granularity, by
     each row's UTC day), a staged file is built holding only the rows the destination lacks
     (dedup on the `requests` key: request id + server id, also against other partitions of
     the same days when the store's granularity changed), with their dialog ids, their FTS
     fragments and the `servers` rows of the bundle. A partition the destination lacks, made
     of exactly one member shaped exactly like a partition, is that member file itself: no
     row copying.
Commit: existing partitions first, each getting its staged rows in one transaction; then each
new partition file appears atomically (hard link, never over a file the gateway created
meanwhile). If a commit step fails, the steps already done are undone: exactly the inserted
rowids are deleted, so a failure anywhere leaves the destination's rows as they were. A
partition the import published stays, emptied of its rows: from the moment it appeared, the
gateway's live ingest may have written into it or a search holds it open, and removing the file
would lose those rows. Re-importing adds nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import peewee

from aiproxy.logstore.bundles.manifest import (
    FORMAT,
    BundleError,
    NoSpace,
    StoreError,
    UnusableInput,
    schema_number,
)
from aiproxy.logstore.bundles.members import drop_views_and_triggers, has_partition_shape, member_problem
from aiproxy.logstore.bundles.verify import ensure_room, no_room, scan_bundle
from aiproxy.logstore.database import (
    FTS_TABLE,
    REQUEST_COLUMNS,
    SCHEMA_VERSION,
    create_fts,
    has_fts,
    indexes_new_rows,
    migrate,
    open_database,
)
from aiproxy.logstore.fts import holds_unsplit_text, index_missing, reindex
from aiproxy.logstore.models import FTS_COLUMNS, Server
from aiproxy.logstore.partitions import day_of, holding
from aiproxy.logstore.stoppable import raise_stop
from aiproxy.logstore.store import Store
from aiproxy.logstore.wal_limit import limit_wal

INCOMING = "incoming"
# What a partition file costs before its rows: tables, indexes and the FTS index (88 KiB).
PARTITION_BYTES = 96 * 1024
_SERVER_COLUMNS = tuple(f.column_name for f in Server._meta.sorted_fields)
_FTS_COLUMNS = ", ".join(FTS_COLUMNS)


@dataclass
class ImportResult:
    bundle_id: str = ""
    source_server_id: str = ""
    rows_imported: int = 0
    rows_skipped: int = 0
    partitions: int = 0
    new_partitions: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["rows_per_s"] = round(self.rows_imported / self.elapsed_s, 1) if self.elapsed_s else 0.0
        return out


@dataclass
class _Target:
    path: Path  # the destination partition
    staged: Path  # the rows it lacks, with their FTS fragments
    sources: list[tuple[Path, int, int]] = field(default_factory=list)  # (staged member, ts from, ts to)
    offered: int = 0  # rows the bundle holds for this partition
    rows: int = 0  # rows staged: those the destination lacks
    last_rowid: int = 0  # the staged file's largest rowid: a published file's rows are (0, last_rowid]
    whole_member: bool = False  # one member, shaped as a partition, holding exactly this partition's rows
    # Other destination partitions holding some of the same days (a store whose granularity
    # changed): rows they hold are not imported again.
    overlapping: list[Path] = field(default_factory=list)

    @property
    def adoptable(self) -> bool:
        """A new partition made of one whole member: the member file becomes the partition
        (its rows and FTS index as they are), instead of copying row by row."""
        return self.whole_member and not self.path.exists() and not self.overlapping


def incoming_dir(store: Store) -> Path:
    path = store.base / INCOMING
    path.mkdir(parents=True, exist_ok=True)
    return path


def import_bundle(
    bundle: Path, store: Store, progress: Callable[[int], None] | None = None, *, label: str = ""
) -> ImportResult:
    """`progress(n)`: n more bytes of the archive read (its verification and staging pass).
    Messages call the bundle `label` (default: its path), never by a path the caller hides."""
    label = label or str(bundle)
    started = time.perf_counter()
    incoming = incoming_dir(store)
    _remove_abandoned(incoming)
    staging = Path(tempfile.mkdtemp(prefix=f"import-{os.getpid()}-", dir=incoming))
    try:
        report = scan_bundle(bundle, staging, progress, label=label)
        if not report.ok:
            raise BundleError(f"{label} failed verification; nothing imported: " + "; ".join(report.problems[:5]))
        meta = report.metadata
        if meta.get("format", FORMAT) != FORMAT:  # the seed wrote none
            raise UnusableInput(
                f"{label}: bundle format {meta['format']!r} is not {FORMAT}, the one this aiproxy reads:"
                " upgrade aiproxy here if a newer one wrote it"
            )
        _refuse_newer(schema_number(meta.get("schema_version", 0)), "the bundle")
        members = [_prepare_member(name, path, store) for name, path in report.staged.items()]
        targets = _plan(store, members, staging)
        result = ImportResult(str(meta.get("bundle_id", "")), str(meta.get("server_id", "")))
        for target in targets:
            # A few KB of rows spread over thousands of days make thousands of partitions, each
            # staged as a whole file: the spare the members' sizes were checked against is kept.
            ensure_room(staging, PARTITION_BYTES, f"{label}: staging partition {target.path.name} takes at least")
            _stage(store, target, result.source_server_id)
        _commit(store, targets, result)
        result.rows_skipped = sum(t.offered for t in targets) - result.rows_imported
        result.elapsed_s = time.perf_counter() - started
        return result
    except (OSError, sqlite3.Error, peewee.DatabaseError) as exc:
        raise_stop(exc)
        # The store's disk or files failed, not the bundle (its faults are BundleErrors by now),
        # and what was done is undone. An OSError's text names paths: the server's own, remotely.
        full = no_room(exc)
        raise (NoSpace if full else StoreError)(
            f"{label}: nothing imported, the store failed ({exc.strerror if isinstance(exc, OSError) else exc}):"
            + (" free some space on the store's disk and run the import again" if full
               else " run the import again when the store is writable")
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # leave no trace unless an upload is waiting there


def _remove_abandoned(incoming: Path) -> None:
    """Staging directories of imports whose process died (killed mid-import): the destination
    was never touched by them, only their scratch files remain."""
    for staging in incoming.glob("import-*-*"):
        pid = staging.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_newer(version: int, what: str) -> None:
    if version > SCHEMA_VERSION:
        raise UnusableInput(
            f"{what} has log store schema version {version}, newer than this aiproxy's ({SCHEMA_VERSION}):"
            " upgrade aiproxy here before importing it"
        )


def _columns(conn: sqlite3.Connection, schema: str, table: str, wanted: tuple[str, ...]) -> str:
    """Columns of `wanted` that `schema.table` has, by name (files of older schemas have fewer)."""
    present = {r[1] for r in conn.execute(f'PRAGMA {schema}.table_info("{table}")')}
    return ", ".join(f'"{c}"' for c in wanted if c in present)


def _plan(store: Store, members: list[_Member], staging: Path) -> list[_Target]:
    """Which destination partition each member's rows go to, by the rows' UTC days."""
    targets: dict[Path, _Target] = {}
    for member in members:
        by_path: dict[Path, list[tuple[int, int]]] = {}
        for day, count in member.days:
            by_path.setdefault(store.partition_path(day_of(day * 86400)), []).append((day, count))
        for path, group in by_path.items():
            target = targets.setdefault(path, _Target(path, staging / f"target-{len(targets)}.sqlite3"))
            target.sources.append((member.path, group[0][0] * 86400, (group[-1][0] + 1) * 86400))
            target.offered += sum(count for _, count in group)
            target.whole_member = len(by_path) == 1 and len(target.sources) == 1 and member.adoptable
    for target in targets.values():
        days = range(min(s[1] for s in target.sources) // 86400, max(s[2] for s in target.sources) // 86400)
        held = {p for d in days for p in holding(store.base, day_of(d * 86400))}
        target.overlapping = sorted(held - {target.path})
    return list(targets.values())


@dataclass
class _Member:
    path: Path  # a staged bundle member, checked and migrated
    days: list[tuple[int, int]]  # (UTC day number, rows)
    adoptable: bool  # shaped exactly like a partition (members.py)


def _prepare_member(name: str, path: Path, store: Store) -> _Member:
    """Check and migrate a staged member (`name` in the bundle), in one connection. A member
    without an FTS index (seed-era, or FTS off at the source) gets one while the store indexes,
    so every later step copies fragments instead of extracting them; one whose index an earlier
    version wrote with runs of unspaced text as whole tokens is indexed anew (unspaced.py)."""
    db = None
    try:
        db = open_database(path, store.settings, create=False)
        drop_views_and_triggers(db.connection())
        _refuse_newer(db.execute_sql("PRAGMA user_version").fetchone()[0], f"bundle member {name}")
        migrate(db)
        problem = member_problem(db.connection())
        if problem:
            raise BundleError(f"bundle member {name} cannot be imported: {problem}")
        if has_fts(db) and holds_unsplit_text(db):  # an earlier version's index: words inside runs not found
            reindex(db, store.settings)
        elif store.settings.fts_enabled and not has_fts(db):
            index_missing(db, store.settings)
        # UTC day numbers, rounded down as day_of does (SQLite's division rounds towards zero: a
        # row of 1969-12-31 would be looked for in 1970-01-01's partition, and not copied).
        days = db.execute_sql("SELECT (ts - ((ts % 86400) + 86400) % 86400) / 86400, COUNT(*) FROM requests"
                              " GROUP BY 1 ORDER BY 1").fetchall()
        return _Member(path, days, has_partition_shape(db.connection()))
    except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:
        raise_stop(exc)
        raise BundleError(f"bundle member {name} is not a usable log database: {exc}") from None
    finally:
        if db is not None:
            db.close()


def _stage(store: Store, target: _Target, source_server_id: str) -> None:
    """Build target.staged: the rows of the sources that the destination partition lacks, with
    their FTS fragments and `servers` rows; or, when adoptable, the whole member as it is."""
    adopt = target.adoptable
    if adopt:
        target.sources[0][0].replace(target.staged)
    db = open_database(target.staged, store.settings)
    try:
        conn = db.connection()
        if source_server_id:
            conn.execute("INSERT OR IGNORE INTO servers (server_id) VALUES (?)", (source_server_id,))
        if not adopt:
            _copy_sources(db, store, target)
        target.rows, target.last_rowid = conn.execute("SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM requests").fetchone()
    finally:
        db.close()


def _copy_sources(db, store: Store, target: _Target) -> None:
    conn = db.connection()
    dest_exists = target.path.is_file()
    with_fts = store.settings.fts_enabled
    holders = ([target.path] if dest_exists else []) + target.overlapping  # rows there are not copied
    for i, path in enumerate(holders):
        conn.execute(f"ATTACH DATABASE ? AS held{i}", (str(path),))
    if dest_exists:
        with_fts = with_fts or _has_table(conn, "held0", FTS_TABLE)
    absent = "".join(
        f" AND NOT EXISTS (SELECT 1 FROM held{i}.requests d WHERE d.request_id = s.request_id"
        " AND d.server_id = s.server_id)"
        for i in range(len(holders))
    )
    if with_fts:
        create_fts(db)
    for member, ts_from, ts_to in target.sources:
        conn.execute("ATTACH DATABASE ? AS src", (str(member),))
        columns = _columns(conn, "src", "requests", REQUEST_COLUMNS)
        servers = _columns(conn, "src", "servers", _SERVER_COLUMNS)
        with _transaction(conn):
            before = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM main.requests").fetchone()[0]
            conn.execute(
                f"INSERT OR IGNORE INTO main.requests ({columns}) SELECT {columns} FROM src.requests s"
                f" WHERE s.ts >= ? AND s.ts < ?{absent}",
                (ts_from, ts_to),
            )
            if servers:
                conn.execute(f"INSERT OR IGNORE INTO main.servers ({servers}) SELECT {servers} FROM src.servers")
            if with_fts and _has_table(conn, "src", FTS_TABLE):
                _copy_fragments(conn, "src", before)
        conn.execute("DETACH DATABASE src")
    for i in range(len(holders)):
        conn.execute(f"DETACH DATABASE held{i}")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "") -> Iterator[None]:
    """BEGIN … COMMIT, or ROLLBACK unless SQLite ended the transaction itself, as it does on a
    full disk or an I/O error (peewee's atomic() then fails on its own ROLLBACK and reports
    "no transaction is active" instead of the error)."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")  # a failed COMMIT leaves the transaction (and its lock) open: rolled back
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _has_table(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    return conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE name = ?", (table,)).fetchone() is not None


def _copy_fragments(conn: sqlite3.Connection, schema: str, after_rowid: int) -> None:
    """FTS fragments from `schema` for the rows main.requests gained after `after_rowid`."""
    conn.execute(
        f"INSERT INTO main.{FTS_TABLE} ({_FTS_COLUMNS}) SELECT {_FTS_COLUMNS} FROM {schema}.{FTS_TABLE}"
        " WHERE request_id IN (SELECT request_id FROM main.requests WHERE rowid > ?)",
        (after_rowid,),
    )


@dataclass
class _Done:
    path: Path
    new: bool
    rowids: tuple[int, int]  # (before, after]: exactly the rows this import inserted
    servers: frozenset[str] = frozenset()  # servers rows present before


def _commit(store: Store, targets: list[_Target], result: ImportResult) -> None:
    done: list[_Done] = []
    # Existing partitions first: a failure there needs no published partition undone (emptied).
    targets = sorted(targets, key=lambda target: not target.path.exists())
    try:
        for target in targets:
            if not target.rows:
                continue
            step = _link_new(target) if not target.path.exists() else None
            if step is None:
                step = _merge_existing(store, target)
            done.append(step)
            added = target.rows if step.new else step.rowids[1] - step.rowids[0]
            result.rows_imported += added
            result.partitions += added > 0  # none when a concurrent import of the bundle got there first
            result.new_partitions += step.new
    except BaseException:
        for step in reversed(done):
            _undo(store, step)
        result.rows_imported = result.partitions = result.new_partitions = 0
        raise


def _link_new(target: _Target) -> _Done | None:
    """Publish a staged file as a new partition; None when the partition appeared meanwhile."""
    target.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(target.staged, target.path)
    except FileExistsError:
        return None
    return _Done(target.path, True, (0, target.last_rowid))


def _merge_existing(store: Store, target: _Target) -> _Done:
    db = store.database(target.path)
    conn = db.connection()
    conn.execute("ATTACH DATABASE ? AS staged", (str(target.staged),))
    try:
        columns = _columns(conn, "main", "requests", REQUEST_COLUMNS)
        servers = _columns(conn, "main", "servers", _SERVER_COLUMNS)
        with _transaction(conn, "IMMEDIATE"):
            before = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM requests").fetchone()[0]
            indexed = indexes_new_rows(db, fts_enabled=True)  # the staged rows' fragments, if it has them
            known = frozenset(r[0] for r in conn.execute("SELECT server_id FROM servers"))
            conn.execute(f"INSERT OR IGNORE INTO main.requests ({columns}) SELECT {columns} FROM staged.requests")
            conn.execute(f"INSERT OR IGNORE INTO main.servers ({servers}) SELECT {servers} FROM staged.servers")
            after = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM requests").fetchone()[0]
            if after > before and indexed and _has_table(conn, "staged", FTS_TABLE):
                create_fts(db)
                _copy_fragments(conn, "staged", before)
    finally:
        conn.execute("DETACH DATABASE staged")
    limit_wal(db, store.settings)  # searches that never stop would keep every import's rows in the -wal
    return _Done(target.path, False, rowids=(before, after), servers=known)


def _undo(store: Store, step: _Done) -> None:
    """Delete the rows the step inserted, their fragments, and the servers rows it added that no
    remaining row names: rows another writer added meanwhile (and their servers) stay."""
    db = store.database(step.path)
    before, after = step.rowids
    with _transaction(db.connection(), "IMMEDIATE"):
        if has_fts(db):
            db.execute_sql(
                f"DELETE FROM {FTS_TABLE} WHERE request_id IN (SELECT request_id FROM requests WHERE rowid > ? AND rowid <= ?)",
                (before, after),
            )
        db.execute_sql("DELETE FROM requests WHERE rowid > ? AND rowid <= ?", (before, after))
        known = sorted(step.servers)
        db.execute_sql(
            f"DELETE FROM servers WHERE server_id NOT IN ({', '.join('?' * len(known))})"
            " AND server_id NOT IN (SELECT server_id FROM requests)",
            known,
        )
