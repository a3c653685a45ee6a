"""Reading single requests, dialogs and store statistics across partition files."""

from __future__ import annotations

import heapq
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiproxy.logstore.database import REQUEST_COLUMNS, has_fts
from aiproxy.logstore.errors import InvalidQuery, LogNotFound
from aiproxy.logstore.partitions import day_of
from aiproxy.logstore.search import SearchFilters, decode_cursor, encode_cursor, filter_clauses, page_size
from aiproxy.logstore.sqltools import IN_CHUNK, IN_LIST, padded
from aiproxy.logstore.store import Store

_DETAIL_COLUMNS = tuple(c for c in REQUEST_COLUMNS if not c.startswith("thread_"))


def _detail(row: tuple) -> dict[str, Any]:
    """A stored row by column name; request_json, response_json and error stay JSON text."""
    return dict(zip(_DETAIL_COLUMNS, row, strict=True))


def get_request(store: Store, request_id: str) -> dict[str, Any]:
    """The full stored request (request and response bodies parsed)."""
    if not request_id:
        raise InvalidQuery("request id is required", param="request_id")
    sql = f"SELECT {', '.join(_DETAIL_COLUMNS)} FROM requests WHERE request_id = ? ORDER BY server_id LIMIT 1"
    for part in reversed(store.existing()):
        with store.connected(part.path) as db:
            row = db.execute_sql(sql, (request_id,)).fetchone()
        if row is not None:
            return _detail(row)
    raise LogNotFound(f"request {request_id!r} is not in the log store", param="request_id")


def get_dialog(store: Store, dialog_id: str) -> list[dict[str, Any]]:
    """The turns of a dialog in order (all partitions: dialogs cross midnight)."""
    if not dialog_id:
        raise InvalidQuery("dialog id is required", param="dialog_id")
    sql = f"SELECT {', '.join(_DETAIL_COLUMNS)} FROM requests WHERE dialog_id = ? ORDER BY ts, ts_iso, request_id"
    turns = []
    for part in store.existing():
        with store.connected(part.path) as db:
            turns += [_detail(row) for row in db.execute_sql(sql, (dialog_id,))]
    if not turns:
        raise LogNotFound(f"dialog {dialog_id!r} is not in the log store", param="dialog_id")
    return sorted(turns, key=lambda t: (t["ts"], t["ts_iso"] or "", t["request_id"]))


@dataclass(slots=True)
class DialogSummary:
    dialog_id: str
    requests: int
    first_ts: int
    last_ts: int
    api_key_hash: str | None
    models: list[str] = field(default_factory=list)
    first_request_id: str = ""

    @property
    def sort_key(self) -> tuple[int, str]:
        return (-self.last_ts, self.dialog_id)

    def merge(self, other: DialogSummary) -> None:
        """Fold in the same dialog's rows from another partition."""
        self.requests += other.requests
        self.models = sorted(set(self.models) | set(other.models))
        if other.first_ts < self.first_ts:
            self.first_ts, self.first_request_id = other.first_ts, other.first_request_id
        self.last_ts = max(self.last_ts, other.last_ts)


_DIALOG_AGGREGATE = (
    "SELECT r.dialog_id, COUNT(*), MIN(r.ts), MAX(r.ts), MIN(r.api_key_hash), GROUP_CONCAT(DISTINCT r.model_mapped),"
    " MIN(r.ts || ' ' || r.request_id) FROM requests r WHERE {where} GROUP BY r.dialog_id"
)


def _aggregate(store: Store, path, where: str, args: list, into: dict[str, DialogSummary]) -> None:
    with store.connected(path) as db:
        rows = db.execute_sql(_DIALOG_AGGREGATE.format(where=where), args).fetchall()
    for dialog_id, count, first, last, key, models, first_request in rows:
        found = DialogSummary(
            dialog_id,
            count,
            first,
            last,
            key,
            sorted(set((models or "").split(",")) - {""}),
            first_request.split(" ", 1)[1],
        )
        if dialog_id in into:
            into[dialog_id].merge(found)
        else:
            into[dialog_id] = found


def list_dialogs(
    store: Store, filters: SearchFilters | None = None, *, limit: int = 20, cursor: str = ""
) -> tuple[list[DialogSummary], str]:
    """Dialogs with activity in range, most recently active first; (page, next_cursor).

    Partitions are read newest first and reading stops once no unread partition can hold a
    more recent dialog than the page's last; the page's dialogs are then completed (counts,
    first turn) from the unread partitions through the dialog_id index. A page therefore costs
    the newest partitions, not the whole store."""
    filters = filters or SearchFilters()
    limit = page_size(limit)
    after = decode_cursor(cursor, "is")  # (last_ts, dialog_id)
    after_key = (-after[0], after[1]) if after is not None else None
    clauses, args = filter_clauses(filters)
    where = " AND ".join(["r.dialog_id IS NOT NULL", *clauses])
    unread = sorted(store.existing(filters.since, filters.to), key=lambda p: (p.last_day, p.first_day))
    seen: dict[str, DialogSummary] = {}
    page: list[DialogSummary] = []
    while unread:
        _aggregate(store, unread.pop().path, where, args, seen)
        candidates = [d for d in seen.values() if after_key is None or d.sort_key > after_key]
        page = heapq.nsmallest(limit, candidates, key=lambda d: d.sort_key)
        newest_unread = max((p.last_day for p in unread), default=None)
        if len(page) == limit and newest_unread is not None and day_of(page[-1].last_ts) > newest_unread:
            break
    for start in range(0, len(page), IN_CHUNK):  # the rest of the page's dialogs, from older files
        ids = [d.dialog_id for d in page[start : start + IN_CHUNK]]
        rest: dict[str, DialogSummary] = {}
        for part in unread:
            _aggregate(store, part.path, f"{where} AND r.dialog_id IN {IN_LIST}", [*args, *padded(ids)], rest)
        for summary in page[start : start + IN_CHUNK]:
            if summary.dialog_id in rest:
                summary.merge(rest[summary.dialog_id])
    next_cursor = encode_cursor((page[-1].last_ts, page[-1].dialog_id)) if len(page) == limit else ""
    return page, next_cursor


def _count_distinct_dialogs(store: Store, parts) -> int:
    """Dialogs cross partitions: count each once, in an in-memory SQLite set (not a Python set)."""
    seen = sqlite3.connect(":memory:")
    try:
        seen.execute("CREATE TABLE d (id TEXT PRIMARY KEY) WITHOUT ROWID")
        for part in parts:
            with store.connected(part.path) as db:
                cursor = db.execute_sql("SELECT DISTINCT dialog_id FROM requests WHERE dialog_id IS NOT NULL")
                seen.executemany("INSERT OR IGNORE INTO d VALUES (?)", cursor)
        return seen.execute("SELECT COUNT(*) FROM d").fetchone()[0]
    finally:
        seen.close()


def _disk_bytes(path) -> int:
    """A partition's size on disk: a live file's recent rows are in its -wal (and -shm) files."""
    files = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
    return sum(f.stat().st_size for f in files if f.exists())


def stats(store: Store, since: date | None = None, to: date | None = None) -> dict[str, Any]:
    parts = store.existing(since, to)
    totals: Counter = Counter()
    models: Counter = Counter()
    providers: Counter = Counter()
    statuses: Counter = Counter()
    first_ts = last_ts = None
    fts_partitions = 0
    for part in parts:
        with store.connected(part.path) as db:
            count, lo, hi = db.execute_sql("SELECT COUNT(*), MIN(ts), MAX(ts) FROM requests").fetchone()
            totals["requests"] += count
            totals["bytes"] += _disk_bytes(part.path)
            fts_partitions += has_fts(db)
            for model, n in db.execute_sql(
                "SELECT COALESCE(model_mapped, ''), COUNT(*) FROM requests GROUP BY 1"
            ):
                models[model] += n
            for provider, n in db.execute_sql(
                "SELECT COALESCE(provider, ''), COUNT(*) FROM requests GROUP BY 1"
            ):
                providers[provider] += n
            for status, n in db.execute_sql(
                "SELECT COALESCE(status_code, 0), COUNT(*) FROM requests GROUP BY 1"
            ):
                statuses[str(status)] += n
        if lo is not None:
            first_ts = lo if first_ts is None else min(first_ts, lo)
            last_ts = hi if last_ts is None else max(last_ts, hi)
    return {
        "partitions": len(parts),
        "fts_partitions": fts_partitions,
        "requests": totals["requests"],
        "dialogs": _count_distinct_dialogs(store, parts),
        "bytes": totals["bytes"],
        "first_ts": first_ts,
        "last_ts": last_ts,
        "by_model": dict(models.most_common()),
        "by_provider": dict(providers.most_common()),
        "by_status": dict(statuses.most_common()),
        "server_id": store.server_id,
        "base": str(store.base),
    }
