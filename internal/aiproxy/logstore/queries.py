"""Reading single requests, dialogs and store statistics across partition files."""

from __future__ import annotations

import heapq
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiproxy.logstore.damage import Unreadable, skipping
from aiproxy.logstore.database import REQUEST_COLUMNS, has_fts
from aiproxy.logstore.errors import InvalidQuery, LogNotFound
from aiproxy.logstore.partitions import day_of
from aiproxy.logstore.search import (
    SearchFilters,
    decode_cursor,
    descending,
    encode_cursor,
    filter_clauses,
    page_size,
)
from aiproxy.logstore.sqltools import chunked, in_list
from aiproxy.logstore.store import Store

_DETAIL_COLUMNS = tuple(c for c in REQUEST_COLUMNS if not c.startswith("thread_"))


def _detail(row: tuple) -> dict[str, Any]:
    """A stored row by column name; request_json, response_json and error stay JSON text."""
    return dict(zip(_DETAIL_COLUMNS, row, strict=True))


def get_request(store: Store, request_id: str) -> dict[str, Any]:
    """The full stored request (its bodies and error as the stored JSON text). Partitions that cannot be
    read are skipped; an id found in none of the others is then PartitionUnreadable (it may be in
    one of them), not LogNotFound. A request found is whole, so there is nothing to warn about."""
    if not request_id:
        raise InvalidQuery("request id is required", param="request_id")
    sql = f"SELECT {', '.join(_DETAIL_COLUMNS)} FROM requests WHERE request_id = ? ORDER BY server_id LIMIT 1"
    skipped = Unreadable()
    for part in reversed(store.existing()):
        row = None
        with skipped.skip(), store.connected(part.path) as db:
            row = db.execute_sql(sql, (request_id,)).fetchone()
        if row is not None:
            return _detail(row)
    if skipped:
        raise skipped.not_found(f"request {request_id!r}")
    raise LogNotFound(f"request {request_id!r} is not in the log store", param="request_id")


# A dialog's turn order; server_id last, so two servers' rows under one id still have an order.
_TURN_ORDER = "ts, COALESCE(ts_iso, ''), request_id, server_id"
TURN_CURSOR = "isss"  # a dialog page's cursor: the last turn's (ts, ts_iso, request_id, server_id)


def dialog_turn_keys(
    store: Store, dialog_id: str, after: tuple | None, count: int, unreadable: Unreadable | None = None
) -> list[tuple[tuple, Any]]:
    """The next `count` turns of a dialog after the turn `after`, in turn order: each as its
    (ts, ts_iso, request_id, server_id) and partition path. Only those columns are read, so a
    page can fetch its turns one at a time and stop at its byte budget."""
    where, args = "dialog_id = ?", [dialog_id]
    if after is not None:
        where += f" AND ({_TURN_ORDER}) > (?, ?, ?, ?)"
        args += list(after)
    sql = f"SELECT {_TURN_ORDER} FROM requests WHERE {where} ORDER BY {_TURN_ORDER} LIMIT ?"
    found: list[tuple[tuple, Any]] = []
    for part in store.existing():  # all partitions: dialogs cross midnight
        with skipping(unreadable), store.connected(part.path) as db:
            found += [(tuple(row), part.path) for row in db.execute_sql(sql, [*args, count])]
    found.sort(key=lambda item: item[0])
    return found[:count]


def get_turn(store: Store, path, key: tuple) -> dict[str, Any] | None:
    """One stored row by its turn key (from dialog_turn_keys); None if it is gone."""
    sql = f"SELECT {', '.join(_DETAIL_COLUMNS)} FROM requests WHERE request_id = ? AND server_id = ?"
    with store.connected(path) as db:
        row = db.execute_sql(sql, (key[2], key[3])).fetchone()
    return _detail(row) if row is not None else None


@dataclass(slots=True)
class DialogSummary:
    """A dialog as a whole: its turn count, first and last turn, models. `active` is the (ts, ts_iso)
    of the last turn that matched the listing's filter (the whole dialog's last turn when there is
    none): the order of a listing, to the µs as for requests, and what its cursor holds."""

    dialog_id: str
    requests: int
    last_ts: int
    api_key_hash: str | None
    models: list[str] = field(default_factory=list)
    first_key: tuple = (0, "", "")  # (ts, ts_iso, request_id) of the first turn: the documented turn order
    active: tuple[int, str] = (0, "")

    @property
    def first_ts(self) -> int:
        return self.first_key[0]

    @property
    def first_request_id(self) -> str:
        return self.first_key[2]

    @property
    def active_ts(self) -> int:
        return self.active[0]

    @property
    def sort_key(self) -> tuple:
        return (-self.active[0], descending(self.active[1]), self.dialog_id)

    def merge(self, other: DialogSummary) -> None:
        """Fold in the same dialog's rows from another partition."""
        self.requests += other.requests
        self.models = sorted(set(self.models) | set(other.models))
        self.first_key = min(self.first_key, other.first_key)
        self.last_ts = max(self.last_ts, other.last_ts)
        self.active = max(self.active, other.active)
        if self.api_key_hash is None or (other.api_key_hash is not None and other.api_key_hash < self.api_key_hash):
            self.api_key_hash = other.api_key_hash  # MIN(), as within one partition


# The first turn in (ts, ts_iso, request_id) order as one string that sorts that way: ts padded
# (it is an integer), \x01 (below every printable character) between the parts.
_FIRST_TURN = "MIN(printf('%020d', r.ts) || char(1) || COALESCE(r.ts_iso, '') || char(1) || r.request_id)"
_LAST_TURN = "MAX(printf('%020d', r.ts) || char(1) || COALESCE(r.ts_iso, ''))"  # its (ts, ts_iso), the same way
_DIALOG_AGGREGATE = (
    "SELECT r.dialog_id, COUNT(*), MIN(r.api_key_hash), GROUP_CONCAT(DISTINCT r.model_mapped),"
    f" {_FIRST_TURN}, {_LAST_TURN} FROM requests r WHERE {{where}} GROUP BY r.dialog_id"
)


def _aggregate(
    store: Store, path, where: str, args: list, into: dict[str, DialogSummary], unreadable: Unreadable | None
) -> None:
    rows = []
    with skipping(unreadable), store.connected(path) as db:
        rows = db.execute_sql(_DIALOG_AGGREGATE.format(where=where), args).fetchall()
    for dialog_id, count, key, models, first_turn, last_turn in rows:
        ts, ts_iso, request_id = first_turn.split("\x01", 2)
        last_ts, last_iso = last_turn.split("\x01", 1)
        models = sorted(set((models or "").split(",")) - {""})
        last = (int(last_ts), last_iso)
        found = DialogSummary(dialog_id, count, last[0], key, models, (int(ts), ts_iso, request_id), last)
        if dialog_id in into:
            into[dialog_id].merge(found)
        else:
            into[dialog_id] = found


def summarize_dialogs(
    store: Store, dialog_ids: list[str], parts=None, unreadable: Unreadable | None = None
) -> dict[str, DialogSummary]:
    """Whole-dialog summaries of `dialog_ids`, from `parts` (default: every partition; dialogs
    cross midnight), through the dialog_id index; with `unreadable`, of the readable ones."""
    found: dict[str, DialogSummary] = {}
    for ids in chunked(dialog_ids):
        marks, args = in_list(ids)
        for part in store.existing() if parts is None else parts:
            _aggregate(store, part.path, f"r.dialog_id IN {marks}", args, found, unreadable)
    return found


def list_dialogs(
    store: Store,
    filters: SearchFilters | None = None,
    *,
    limit: int = 20,
    cursor: str = "",
    unreadable: Unreadable | None = None,
) -> tuple[list[DialogSummary], str]:
    """Dialogs with a request that matches the filters, most recently active (in the filters)
    first; (page, next_cursor). Each summary describes the whole dialog: all its turns, also
    those outside the date range or of another model.

    Partitions are read newest first and reading stops once no unread partition can hold a
    more recent dialog than the page's last; the page's dialogs are then completed (counts,
    first turn) from the other partitions through the dialog_id index. A page therefore costs
    the newest partitions, not the whole store."""
    filters = filters or SearchFilters()
    limit = page_size(limit)
    after = decode_cursor(cursor, "iss")  # (active ts, its ts_iso, dialog_id)
    after_key = (-after[0], descending(after[1]), after[2]) if after is not None else None
    clauses, args = filter_clauses(filters)
    where = " AND ".join(["r.dialog_id IS NOT NULL", *clauses])
    unread = sorted(store.existing(filters.since, filters.to), key=lambda p: (p.last_day, p.first_day))
    seen: dict[str, DialogSummary] = {}
    page: list[DialogSummary] = []
    while unread:
        _aggregate(store, unread.pop().path, where, args, seen, unreadable)
        candidates = [d for d in seen.values() if after_key is None or d.sort_key > after_key]
        page = heapq.nsmallest(limit, candidates, key=lambda d: d.sort_key)
        newest_unread = max((p.last_day for p in unread), default=None)
        if len(page) == limit and newest_unread is not None and day_of(page[-1].active_ts) > newest_unread:
            break
    ids = [d.dialog_id for d in page]
    if clauses:  # the filter saw some rows only: count every turn, in every partition
        whole = summarize_dialogs(store, ids, unreadable=unreadable)
        for position, summary in enumerate(page):
            if summary.dialog_id in whole:  # else regrouped meanwhile (`dialogs assign`)
                whole[summary.dialog_id].active = summary.active  # the order the filter gave it
                page[position] = whole[summary.dialog_id]
    else:  # every row of the partitions read is counted: add the older files' rows
        rest = summarize_dialogs(store, ids, unread, unreadable)
        for summary in page:
            if summary.dialog_id in rest:
                summary.merge(rest[summary.dialog_id])
    next_cursor = encode_cursor((*page[-1].active, page[-1].dialog_id)) if len(page) == limit else ""
    return page, next_cursor


def _count_distinct_dialogs(store: Store, parts, unreadable: Unreadable | None) -> int:
    """Dialogs cross partitions: count each once, in an in-memory SQLite set (not a Python set)."""
    seen = sqlite3.connect(":memory:")
    try:
        seen.execute("CREATE TABLE d (id TEXT PRIMARY KEY) WITHOUT ROWID")
        for part in parts:
            with skipping(unreadable), store.connected(part.path) as db:
                cursor = db.execute_sql("SELECT DISTINCT dialog_id FROM requests WHERE dialog_id IS NOT NULL")
                seen.executemany("INSERT OR IGNORE INTO d VALUES (?)", cursor)
        return seen.execute("SELECT COUNT(*) FROM d").fetchone()[0]
    finally:
        seen.close()


def _disk_bytes(path) -> int:
    """A partition's size on disk: a live file's recent rows are in its -wal (and -shm) files."""
    files = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
    return sum(f.stat().st_size for f in files if f.exists())


def _partition_stats(db) -> tuple[tuple, bool, list[tuple[str, str, int]]]:
    """One partition's (count, min ts, max ts), whether it has an FTS index, and (kind, key, n) groups."""
    totals = db.execute_sql("SELECT COUNT(*), MIN(ts), MAX(ts) FROM requests").fetchone()
    groups = []
    for kind, column in (("model", "COALESCE(model_mapped, '')"), ("provider", "COALESCE(provider, '')"),
                         ("status", "COALESCE(status_code, 0)")):
        groups += [(kind, key, n) for key, n in db.execute_sql(f"SELECT {column}, COUNT(*) FROM requests GROUP BY 1")]
    return totals, has_fts(db), groups


def stats(
    store: Store, since: date | None = None, to: date | None = None, *, unreadable: Unreadable | None = None
) -> dict[str, Any]:
    """Totals over the partitions in range. With `unreadable`, a partition that cannot be read is
    left out of every number (`partitions` counts those read) and noted there."""
    parts = store.existing(since, to)
    totals: Counter = Counter()
    counters: dict[str, Counter] = {"model": Counter(), "provider": Counter(), "status": Counter()}
    first_ts = last_ts = None
    fts_partitions = 0
    read = []
    for part in parts:
        with skipping(unreadable), store.connected(part.path) as db:
            (count, lo, hi), indexed, groups = _partition_stats(db)
            read.append(part)  # only once every number of the partition is in hand
            totals["requests"] += count
            totals["bytes"] += _disk_bytes(part.path)
            fts_partitions += indexed
            for kind, key, n in groups:
                counters[kind][str(key) if kind == "status" else key] += n
            if lo is not None:
                first_ts = lo if first_ts is None else min(first_ts, lo)
                last_ts = hi if last_ts is None else max(last_ts, hi)
    dialogs = _count_distinct_dialogs(store, read, unreadable)
    return {
        "partitions": len(read),
        "fts_partitions": fts_partitions,
        "requests": totals["requests"],
        "dialogs": dialogs,
        "bytes": totals["bytes"],
        "first_ts": first_ts,
        "last_ts": last_ts,
        "by_model": dict(counters["model"].most_common()),
        "by_provider": dict(counters["provider"].most_common()),
        "by_status": dict(counters["status"].most_common()),
        "server_id": store.server_id,
        "base": str(store.base),
    }
