"""Whether a bundle's partition member can be imported, and whether it can become a partition
as it is.

A member that passes the archive checks may still be damaged (its sha256 in metadata.json can be
recomputed over flipped bytes) or lack the log schema's columns: it is refused. A member may also
carry objects or constraints of its own (a trigger would run inside the destination partition on
every later insert, a CHECK would refuse them) or a seed-era schema (its primary key is the request
id alone): only a member whose schema is exactly that of a partition this code creates (FTS
present or not) is adopted as a file; any other has its rows copied into a file the store creates.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import tempfile
from pathlib import Path

from aiproxy.logstore.database import FTS_TABLE, REQUEST_COLUMNS, create_fts, open_database
from aiproxy.logstore.models import FTS_COLUMNS
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.stoppable import raise_stop

# A partition name has four digits of year: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, what ingest stores.
FIRST_TS, LAST_TS = -62135596800, 253402300799
Shape = frozenset  # of (type, name, table, SQL with its whitespace collapsed): every schema object


def shape_of(conn: sqlite3.Connection) -> Shape:
    """The file's schema as a comparable value: tables with their columns, types and constraints
    (CHECK, DEFAULT, COLLATE), indexes with their keys, triggers, views. SQLite keeps each object's
    CREATE statement, so comparing those compares everything."""
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
    return Shape((kind, name, table, _QUOTED_NAME.sub(r'\1"\2"', " ".join(sql.split())) if sql else None)
                 for kind, name, table, sql in rows)


# FTS5 creates its tables as CREATE TABLE 'name'(…), and SQLite's ALTER TABLE RENAME (of an index
# `fts build` filled beside the rows, fts.py) writes the new name as "name": the same table.
_QUOTED_NAME = re.compile(r"^(CREATE TABLE )'([^']*)'")


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


def drop_views_and_triggers(conn: sqlite3.Connection) -> None:
    """Make a staged member inert before anything reads or writes it. A view named like a table
    the import reads (a recursive CTE posing as `requests` or `servers`) let a 1 KB bundle pour
    any number of rows into the store; a trigger ran on the migration's own writes. Neither is a
    log's data, and the member is the importer's scratch copy."""
    objects = conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('view', 'trigger')").fetchall()
    for kind, name in objects:
        quoted = name.replace('"', '""')
        conn.execute(f'DROP {kind.upper()} IF EXISTS "{quoted}"')


def member_problem(conn: sqlite3.Connection) -> str | None:
    """Why a (migrated) member cannot be imported at all, or None."""
    check = conn.execute("PRAGMA quick_check(5)").fetchall()
    if check != [("ok",)]:
        return "damaged database pages: " + "; ".join(r[0] for r in check)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'requests'").fetchone():
        return "it has no requests table"
    present = {r[1] for r in conn.execute('PRAGMA table_info("requests")')}
    missing = [c for c in REQUEST_COLUMNS if c not in present]
    if missing:
        return f"its requests table lacks the log schema's columns {', '.join(missing)}"
    index = {r[1] for r in conn.execute(f'PRAGMA table_info("{FTS_TABLE}")')}
    if index and not index >= set(FTS_COLUMNS):  # its fragments are copied by these names
        return f"its {FTS_TABLE} lacks the full-text index's columns {', '.join(sorted(set(FTS_COLUMNS) - index))}"
    if index:
        # quick_check reads no FTS5 structure: a damaged index passed, became a partition (or
        # its fragments were copied) and every search of those days failed as "malformed".
        try:
            conn.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('integrity-check')")
        except sqlite3.DatabaseError as exc:
            raise_stop(exc)
            return f"damaged full-text index: {exc}"
    undated = conn.execute(
        "SELECT COUNT(*) FROM requests WHERE NOT (typeof(ts) = 'integer' AND ts BETWEEN ? AND ?)", (FIRST_TS, LAST_TS)
    ).fetchone()[0]
    if undated:  # a row's UTC day picks its partition
        return f"{undated} of its rows have no valid ts (whole epoch seconds of years 1 to 9999)"
    return None


def has_partition_shape(conn: sqlite3.Connection) -> bool:
    return shape_of(conn) in reference_shapes()
