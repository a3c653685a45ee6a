"""Writing a batch of rows into one partition: one IMMEDIATE transaction inserting the
new `requests` rows and, when the partition has an FTS index (or FTS is on), their text
fragments, so the index is always current without rebuilds.

The hot path uses the sqlite3 connection's `executemany` with column lists taken from the
Peewee models: Peewee's per-row query building would cost more than the inserts themselves.
"""

from __future__ import annotations

from peewee import SqliteDatabase

from aiproxy.logstore.database import FTS_TABLE, REQUEST_COLUMNS, create_fts, indexes_new_rows
from aiproxy.logstore.records import InvalidRecord, Row, utc_iso
from aiproxy.logstore.sqltools import chunked, in_list
from aiproxy.logstore.unspaced import split_unspaced

INSERT_REQUEST = f"INSERT OR IGNORE INTO requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"


def insert_fragment(table: str = FTS_TABLE) -> str:
    return (f"INSERT INTO {table} (request_id, role, content, endpoint, model_original, model_mapped)"
            " VALUES (?, ?, ?, ?, ?, ?)")


INSERT_FRAGMENT = insert_fragment()


def _indexed(text: str) -> str:
    """The indexed copy of a text: each character of a script written without spaces a token (unspaced.py),
    so that a word inside a run of them is found, and a NUL a space (both separate words): FTS5's snippets
    stop copying text at a NUL, `nul\0inside alpha` showed as `nul[alpha]`."""
    return split_unspaced(text.replace("\x00", " "))


def fragment_rows(request_id: str, fragments, endpoint: str, model_original: str | None, model_mapped: str | None):
    """INSERT_FRAGMENT's rows for a request's (role, text) fragments, as indexed (_indexed)."""
    models = _indexed(model_original or ""), _indexed(model_mapped or "")
    return [(request_id, _indexed(role), _indexed(text), endpoint, *models) for role, text in fragments]


def fts_rows(rows: list[Row]):
    for row in rows:
        v = row.values
        yield from fragment_rows(v["request_id"], row.fragments, v["endpoint"], v["model_original"], v["model_mapped"])


def _stored(conn, ids: list[str]) -> dict[tuple[str, str], str | None]:
    """(request_id, server_id) -> ts_iso of the stored rows with these ids."""
    found: dict[tuple[str, str], str | None] = {}
    ids = sorted(set(ids))
    for chunk in chunked(ids):
        marks, args = in_list(chunk)
        rows = conn.execute(f"SELECT request_id, server_id, ts_iso FROM requests WHERE request_id IN {marks}", args)
        found.update(((request_id, server_id), ts_iso) for request_id, server_id, ts_iso in rows)
    return found


def reused_id(request_id: str, ts_iso: str) -> str:
    """The row id of a later exchange that reused a request id (clients choose X-Request-ID):
    derived from its own timestamp, so ingesting the same line again still finds it."""
    return f"{request_id}@{ts_iso}"


def _is_reuse(stored_ts: str | None, values: dict) -> bool:
    """A stored row with this key is another exchange, not this record ingested again. Seed rows
    (no ts_iso) have content-derived ids: the same id is the same exchange."""
    if stored_ts is None or values["ts_iso"] is None or stored_ts == values["ts_iso"]:
        return False
    try:  # a row stored before timestamps were normalised may hold another offset for the same instant
        return utc_iso(stored_ts) != values["ts_iso"]
    except InvalidRecord:
        return True


def _stored_for(conn, rows: list[Row]) -> dict[tuple[str, str], str | None]:
    """_stored() for the rows' ids, and for the reused_id() of rows whose id another exchange holds."""
    stored = _stored(conn, [r.values["request_id"] for r in rows])
    reused = [v for r in rows if (v := r.values)["request_id"] != _row_id(v, stored)]
    if reused:
        stored.update(_stored(conn, [reused_id(v["request_id"], v["ts_iso"]) for v in reused]))
    return stored


def _row_id(values: dict, stored: dict[tuple[str, str], str | None]) -> str:
    """The id the row is stored under: its own, or reused_id() when another exchange holds that."""
    if _is_reuse(stored.get((values["request_id"], values["server_id"])), values):
        return reused_id(values["request_id"], values["ts_iso"])
    return values["request_id"]


def not_held(conn, rows: list[Row]) -> list[Row]:
    """The rows this (other) partition does not hold (a store whose granularity changed has daily
    files beside weekly or monthly ones for the same days); a row reusing an id held there takes
    its reused_id(), as insert_rows would give it."""
    stored = _stored_for(conn, rows)
    kept = []
    for row in rows:
        row.values["request_id"] = _row_id(row.values, stored)
        if (row.values["request_id"], row.values["server_id"]) not in stored:
            kept.append(row)
    return kept


def insert_rows(db: SqliteDatabase, rows: list[Row], *, fts_enabled: bool) -> list[Row]:
    """Insert the rows not stored yet; returns those that were inserted. A row whose id another
    exchange already holds is stored under reused_id()."""
    with db.atomic("IMMEDIATE"):
        # Decided under the write lock: an `fts drop` (or build) in another process may change it.
        with_fts = indexes_new_rows(db, fts_enabled)
        if with_fts:
            create_fts(db)  # a no-op when it exists
        conn = db.connection()
        seen = _stored_for(conn, rows)
        fresh = []
        for row in rows:
            values = row.values
            values["request_id"] = _row_id(values, seen)
            key = (values["request_id"], values["server_id"])
            if key not in seen:
                seen[key] = values["ts_iso"]
                fresh.append(row)
        conn.executemany(INSERT_REQUEST, [r.as_tuple() for r in fresh])
        if with_fts:
            conn.executemany(INSERT_FRAGMENT, fts_rows(fresh))
    return fresh
