"""Writing a batch of rows into one partition: one IMMEDIATE transaction inserting the
new `requests` rows and, when the partition has an FTS index (or FTS is on), their text
fragments, so the index is always current without rebuilds.

The hot path uses the sqlite3 connection's `executemany` with column lists taken from the
Peewee models: Peewee's per-row query building would cost more than the inserts themselves.
"""

from __future__ import annotations

from peewee import SqliteDatabase

from aiproxy.logstore.database import FTS_TABLE, REQUEST_COLUMNS, create_fts, has_fts
from aiproxy.logstore.records import Row
from aiproxy.logstore.sqltools import IN_CHUNK, IN_LIST, padded

INSERT_REQUEST = f"INSERT OR IGNORE INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
INSERT_FRAGMENT = (
    f"INSERT INTO {FTS_TABLE} (request_id, role, content, endpoint, model_original, model_mapped)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def fts_rows(rows: list[Row]):
    for row in rows:
        v = row.values
        for role, text in row.fragments:
            yield (
                v["request_id"],
                role,
                text,
                v["endpoint"],
                v["model_original"] or "",
                v["model_mapped"] or "",
            )


def _existing(conn, rows: list[Row]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    ids = sorted({r.values["request_id"] for r in rows})
    for i in range(0, len(ids), IN_CHUNK):
        found.update(
            conn.execute(
                f"SELECT request_id, server_id FROM requests WHERE request_id IN {IN_LIST}",
                padded(ids[i : i + IN_CHUNK]),
            )
        )
    return found


def insert_rows(db: SqliteDatabase, rows: list[Row], *, fts_enabled: bool) -> list[Row]:
    """Insert the rows not stored yet; returns those that were inserted."""
    with_fts = has_fts(db) or fts_enabled
    if with_fts and not has_fts(db):
        create_fts(db)
    with db.atomic("IMMEDIATE"):
        conn = db.connection()
        seen = _existing(conn, rows)
        fresh = []
        for row in rows:
            key = (row.values["request_id"], row.values["server_id"])
            if key not in seen:
                seen.add(key)
                fresh.append(row)
        conn.executemany(INSERT_REQUEST, [r.as_tuple() for r in fresh])
        if with_fts:
            conn.executemany(INSERT_FRAGMENT, fts_rows(fresh))
    return fresh
