"""`merge`: copy every partition under a directory into one SQLite file (seed §7.7), fixed:
only partition files (`ai_proxy_*.sqlite3`) are sources, never the control DB, an earlier merge
output, the destination itself or bundle staging files (`incoming/`), columns are copied by name (not `SELECT *` order, so seed files and newer files mix),
the FTS index is brought up to date, and the target changes only when the merge is complete.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import peewee

from aiproxy.logstore.atomic_output import atomic_output
from aiproxy.logstore.bundles.importer import INCOMING
from aiproxy.logstore.database import first_read_only, open_database, schema_not_utf8
from aiproxy.logstore.fts import index_missing
from aiproxy.logstore.models import BASE_MODELS
from aiproxy.logstore.partitions import is_partition_name
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.stoppable import backup_in_steps, raise_stop


class MergeError(Exception):
    """A source or the target that SQLite cannot use (not a database, not writable), by name.
    The target is left as it was: nothing of this merge reaches it."""


def merge(source_dir: Path, dest: Path, settings: LogStoreSettings) -> dict:
    """Merge into a temporary copy of `dest` (empty when there is none) renamed over it at the end,
    so an interrupted merge (Ctrl-C, kill -9, a full disk) never leaves a partial file that looks
    like a finished one, and an existing target stays intact until the new one is complete."""
    dest = Path(dest).absolute()
    root = Path(source_dir).absolute()
    sources = [
        p
        for p in sorted(root.rglob("ai_proxy_*.sqlite3"))
        if is_partition_name(p.name) and p.resolve() != dest.resolve() and INCOMING not in p.relative_to(root).parts
    ]
    current = dest  # the file an error is about (the target, never its temporary name)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(dest, overwrite=True) as temp:
            if dest.exists():
                _start_from(dest, temp, settings)
            db = open_database(temp, settings)
            try:
                for number, current in enumerate(sources):
                    _copy_rows(db, current, f"src{number}")
                current = dest
                indexed, _ = index_missing(db, settings)
                total = db.execute_sql("SELECT COUNT(*) FROM requests").fetchone()[0]
                integrity = db.execute_sql("PRAGMA integrity_check").fetchone()[0]
            finally:
                db.close()
            _check_not_in_use(dest)
    except (peewee.DatabaseError, sqlite3.DatabaseError) as exc:
        raise_stop(exc)
        raise MergeError(f"{current}: {exc}") from None
    except UnicodeDecodeError:  # SQLite's message quotes a damaged schema's bytes, which Python cannot decode
        raise MergeError(f"{current}: {schema_not_utf8()}") from None
    return {"sources": len(sources), "total_requests": total, "fragments_indexed": indexed, "integrity": integrity}


def _start_from(dest: Path, temp: Path, settings: LogStoreSettings) -> None:
    """Copy the existing target into `temp` with the online backup API (what its -wal holds
    included). Read-write, as the merge into it always was: closing the last connection
    checkpoints and deletes its -wal, which would otherwise be replayed into the new file."""
    source = sqlite3.connect(dest, timeout=settings.busy_timeout_ms / 1000)
    try:
        target = sqlite3.connect(temp)
        try:
            backup_in_steps(source, target)
        finally:
            target.close()
    finally:
        source.close()


def _check_not_in_use(dest: Path) -> None:
    """SQLite applies a -wal or hot -journal beside a file to whatever file has that name: renaming
    the new target over one another process still writes would corrupt the new file."""
    for suffix in ("-wal", "-journal"):
        sidecar = dest.with_name(dest.name + suffix)
        if sidecar.exists():
            raise MergeError(f"{dest}: in use by another process ({sidecar.name} is there): close it, then merge"
                             " again; the target was not changed")


def _attach(db, source: Path, alias: str) -> None:
    """Attach a source read-only, as the store reads a file it may not write (database.read_only_uris):
    a store on a read-only mount can be merged into a local file."""

    def attempt(uri: str) -> None:
        db.execute_sql(f"ATTACH DATABASE ? AS {alias}", (uri,))
        try:
            db.execute_sql(f"SELECT count(*) FROM {alias}.sqlite_master")  # SQLite may open it lazily
        except peewee.DatabaseError:
            db.execute_sql(f"DETACH DATABASE {alias}")
            raise

    first_read_only(source, attempt)


def _copy_rows(db, source: Path, alias: str) -> None:
    _attach(db, source, alias)
    try:
        with db.atomic("IMMEDIATE"):
            for model in BASE_MODELS:
                table = model._meta.table_name
                theirs = {r[1] for r in db.execute_sql(f'PRAGMA {alias}.table_info("{table}")')}
                columns = ", ".join(f'"{f.column_name}"' for f in model._meta.sorted_fields if f.column_name in theirs)
                if columns:
                    db.execute_sql(f'INSERT OR IGNORE INTO main."{table}" ({columns}) SELECT {columns} FROM {alias}."{table}"')
    finally:
        db.execute_sql(f"DETACH DATABASE {alias}")
