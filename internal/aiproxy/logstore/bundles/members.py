"""Whether a bundle's partition member can be imported, and whether it can become a partition
as it is.

A member that passes the archive checks may still be damaged (its sha256 in metadata.json can be
recomputed over flipped bytes) or lack the log schema's columns: it is refused. A member may also
carry objects of its own (a trigger would run inside the destination partition on every later
insert) or a seed-era schema (its primary key is the request id alone): only a member shaped
exactly like a partition this code creates (the same tables and columns, the same indexes on the
same columns, FTS present or not, nothing else) is adopted as a file; any other has its rows
copied into a file the store creates.
"""

from __future__ import annotations

import functools
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiproxy.logstore.database import REQUEST_COLUMNS, create_fts, open_database
from aiproxy.logstore.settings import LogStoreSettings


@dataclass(frozen=True)
class Shape:
    """The schema objects of a log store file, as comparable values."""

    objects: frozenset[tuple[str, str]]  # (type, name), SQLite's own sqlite_* objects left out
    columns: frozenset[tuple[str, frozenset[str]]]  # (table, its column names: seed-era files order them apart)
    indexes: tuple[tuple[str, tuple], ...]  # (index, (table, unique, partial, keys))


def shape_of(conn: sqlite3.Connection) -> Shape:
    objects = frozenset(conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'"))
    tables = sorted(name for kind, name in objects if kind == "table")
    columns = frozenset((t, frozenset(r[1] for r in conn.execute(f'PRAGMA table_info("{t}")'))) for t in tables)
    indexes = []
    for table in tables:
        for _, name, unique, _, partial in conn.execute(f'PRAGMA index_list("{table}")'):
            # Keys by column name; an expression key has none and never matches ours.
            keys = tuple((col, desc, coll) for _, _, col, desc, coll, key in
                         conn.execute(f'PRAGMA index_xinfo("{name}")') if key)
            indexes.append((name, (table, unique, partial, keys)))
    return Shape(objects, columns, tuple(sorted(indexes)))


@functools.cache
def reference_shapes() -> tuple[Shape, Shape]:
    """A partition as this code creates it, without and with the FTS index."""
    with tempfile.TemporaryDirectory(prefix="aiproxy-shape-") as tmp:
        db = open_database(Path(tmp) / "reference.sqlite3", LogStoreSettings())
        try:
            conn = db.connection()
            plain = shape_of(conn)
            create_fts(db)
            return plain, shape_of(conn)
        finally:
            db.close()


def member_problem(conn: sqlite3.Connection) -> str | None:
    """Why a (migrated) member cannot be imported at all, or None."""
    check = conn.execute("PRAGMA quick_check(5)").fetchall()
    if check != [("ok",)]:
        return "damaged database pages: " + "; ".join(r[0] for r in check)
    present = {r[1] for r in conn.execute('PRAGMA table_info("requests")')}
    missing = [c for c in REQUEST_COLUMNS if c not in present]
    if missing:
        return f"its requests table lacks the log schema's columns {', '.join(missing)}"
    return None


def has_partition_shape(conn: sqlite3.Connection) -> bool:
    return shape_of(conn) in reference_shapes()
