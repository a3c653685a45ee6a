"""Search over all partitions in range: FTS5 syntax, bm25 ranking, snippets, filters, cursors.

Without a query, requests come newest first, paged by a (ts, ts_iso, request id) cursor. With
one, each partition returns its best matches (bm25, one hit per request: its best fragment) and
the merge keeps the best overall; pages are by position (the cursor holds an offset), because a
new row changes every bm25 score of its partition and a score-based cursor would then skip the
rest of the results on a live store. bm25 statistics are per partition, which ranks as well as one big table
in practice and keeps each query small. `a NEAR/N b` is accepted (fts_query). A query is checked against an empty in-memory FTS5
table first, so bad syntax becomes InvalidQuery and never an SQL error from a partition.
"""

from __future__ import annotations

import base64
import heapq
import sqlite3
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from aiproxy.logstore.database import FTS_TABLE, has_fts
from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.fts_query import to_fts5
from aiproxy.logstore.models import FTS_COLUMNS
from aiproxy.logstore.partitions import day_bounds, day_of
from aiproxy.logstore.store import Store

MAX_LIMIT = 500
DEFAULT_LIMIT = 20
MAX_OFFSET = 10_000  # how deep ranked pages go: each page ranks everything before it again
SNIPPET_TOKENS = 16
_RESULT_COLUMNS = (
    "r.request_id, r.server_id, r.ts, r.ts_iso, r.endpoint, r.model_original, r.model_mapped, r.provider,"
    " r.transport, r.stream, r.status_code, r.latency_ms, r.ttft_ms, r.api_key_hash, r.dialog_id,"
    " r.prompt_tokens, r.completion_tokens, r.total_tokens, r.finish_reason"
)
RESULT_FIELDS = tuple(c.strip()[2:] for c in _RESULT_COLUMNS.split(","))


@dataclass(slots=True)
class SearchFilters:
    since: date | None = None
    to: date | None = None
    model: str | None = None  # matches model_original or model_mapped
    provider: str | None = None
    api_key_hash: str | None = None
    status_code: int | None = None
    dialog_id: str | None = None


@dataclass(slots=True)
class Hit:
    fields: dict[str, Any]
    score: float | None = None
    snippet: str = ""

    @property
    def sort_key(self) -> tuple:
        """Listing order: newest first, to the µs (ts is whole seconds; seed rows have no ts_iso)."""
        return (-self.fields["ts"], _desc(self.fields["ts_iso"] or ""), _desc(self.fields["request_id"]))

    @property
    def cursor_key(self) -> tuple:
        return (self.fields["ts"], self.fields["ts_iso"] or "", self.fields["request_id"])


@dataclass(slots=True)
class SearchPage:
    hits: list[Hit] = field(default_factory=list)
    next_cursor: str = ""
    partitions: int = 0


def _desc(text: str) -> tuple:
    return tuple(-ord(ch) for ch in text) + (1,)


def validate_query(query: str) -> None:
    """Raise InvalidQuery unless `query` parses as FTS5 for request_text_index's columns."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
            + ", ".join(f"{c} UNINDEXED" if c == "request_id" else c for c in FTS_COLUMNS) + ")"
        )
        conn.execute(f"SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?", (query,)).fetchall()
    except sqlite3.Error as exc:
        raise InvalidQuery(f"invalid search query {query!r}: {exc}", param="q") from None
    finally:
        conn.close()


def encode_cursor(key: tuple) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


# A cursor's parts by letter: f a number (bm25), i an integer, s a string.
_CURSOR_PARTS = {"f": (int, float), "i": (int,), "s": (str,)}
RANKED, LISTED = "i", "iss"  # (offset,), (ts, ts_iso, request_id)


def decode_cursor(cursor: str, shape: str) -> tuple | None:
    """The key a next_cursor encodes, checked against `shape` (letters of _CURSOR_PARTS)."""
    if not cursor:
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        parts = list(zip(value, shape, strict=True))  # ValueError when the lengths differ
        if any(isinstance(part, bool) or not isinstance(part, _CURSOR_PARTS[kind]) for part, kind in parts):
            raise ValueError
        return tuple(float(part) if kind == "f" else part for part, kind in parts)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidQuery(
            "invalid cursor (use next_cursor from the previous page)", param="cursor"
        ) from None


def filter_clauses(filters: SearchFilters, *, indexed: bool = True) -> tuple[list[str], list[Any]]:
    """SQL conditions on `requests r` for `filters`. With indexed=False every column is written
    `+r.column`, which keeps SQLite from using that column's index: for a join driven by FTS
    matches, an index on a filter column would replace the primary-key lookup of each match by
    a scan of every row with that value (60 s instead of 0.4 s on 50k rows)."""
    col = "r.{}" if indexed else "+r.{}"
    clauses, args = [], []
    start, end = day_bounds(filters.since, filters.to)
    if start is not None:
        clauses.append(f"{col.format('ts')} >= ?")
        args.append(start)
    if end is not None:
        clauses.append(f"{col.format('ts')} < ?")
        args.append(end)
    if filters.model:
        clauses.append(f"({col.format('model_original')} = ? OR {col.format('model_mapped')} = ?)")
        args += [filters.model, filters.model]
    for column in ("provider", "api_key_hash", "status_code", "dialog_id"):
        value = getattr(filters, column)
        if value is not None and value != "":
            clauses.append(f"{col.format(column)} = ?")
            args.append(value)
    return clauses, args


def _hit(row: tuple, score: float | None = None, snippet: str = "") -> Hit:
    return Hit(dict(zip(RESULT_FIELDS, row, strict=True)), score, snippet)


def page_size(limit: int | None) -> int:
    """A page size from a client: 0 or none means the default; InvalidQuery outside 1..MAX_LIMIT."""
    if not limit:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}, not {limit}", param="limit")
    return limit


def ranked_sql(query: str, filters: SearchFilters) -> tuple[str, list[Any]]:
    """The statement ranked_hits runs: every match of `query` (score, request_id, rowid), best
    first, only those whose request passes `filters`. The FTS match drives; each match's request
    is found by its key (request_id), never through an index on a filter column."""
    clauses, args = filter_clauses(filters, indexed=False)
    join = f" CROSS JOIN requests r ON r.request_id = {FTS_TABLE}.request_id" if clauses else ""
    where = " AND ".join([f"{FTS_TABLE} MATCH ?", *clauses])
    sql = (
        f"SELECT bm25({FTS_TABLE}) AS score, {FTS_TABLE}.request_id, {FTS_TABLE}.rowid FROM {FTS_TABLE}{join}"
        f" WHERE {where} ORDER BY score, {FTS_TABLE}.request_id"
    )
    return sql, [query, *args]


def ranked_hits(db, query: str, filters: SearchFilters, limit: int) -> list[tuple[float, str, int]]:
    """One partition's best `limit` requests: (bm25 of the best fragment, request_id, fragment
    rowid). Only these three columns are read while ranking."""
    sql, args = ranked_sql(query, filters)
    best: list[tuple[float, str, int]] = []
    seen: set[str] = set()
    for score, request_id, rowid in db.execute_sql(sql, args):
        if request_id in seen:
            continue
        seen.add(request_id)
        best.append((score, request_id, rowid))
        if len(best) >= limit:
            break
    return best


def ranked_hit(db, query: str, score: float, request_id: str, rowid: int) -> Hit | None:
    """A winner's row and snippet (computed for the final page only: snippets are costly)."""
    snippet = db.execute_sql(
        f"SELECT snippet({FTS_TABLE}, 2, '[', ']', '…', {SNIPPET_TOKENS}) FROM {FTS_TABLE}"
        f" WHERE {FTS_TABLE} MATCH ? AND rowid = ?",
        (query, rowid),
    ).fetchone()
    row = db.execute_sql(
        f"SELECT {_RESULT_COLUMNS} FROM requests r WHERE r.request_id = ? ORDER BY r.server_id LIMIT 1",
        (request_id,),
    ).fetchone()
    return _hit(row, score, snippet[0] if snippet else "") if row is not None else None


def _recent(db, filters: SearchFilters, after: tuple | None, limit: int) -> list[Hit]:
    clauses, args = filter_clauses(filters)
    if after is not None:
        clauses.append("(r.ts < ? OR (r.ts = ? AND (COALESCE(r.ts_iso, '') < ?"
                       " OR (COALESCE(r.ts_iso, '') = ? AND r.request_id < ?))))")
        args += [after[0], after[0], after[1], after[1], after[2]]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (f"SELECT {_RESULT_COLUMNS} FROM requests r {where}"
           " ORDER BY r.ts DESC, COALESCE(r.ts_iso, '') DESC, r.request_id DESC LIMIT ?")
    return [_hit(row) for row in db.execute_sql(sql, [*args, limit])]


def search(
    store: Store, query: str = "", filters: SearchFilters | None = None, *, limit: int = 20, cursor: str = ""
) -> SearchPage:
    filters = filters or SearchFilters()
    limit = page_size(limit)
    query = to_fts5((query or "").strip())
    ranked = bool(query)
    if ranked:
        validate_query(query)
    after = decode_cursor(cursor, RANKED if ranked else LISTED)
    offset = after[0] if ranked and after else 0
    if offset < 0:
        raise InvalidQuery("invalid cursor (use next_cursor from the previous page)", param="cursor")
    if offset > MAX_OFFSET:
        raise InvalidQuery(f"ranked results are paged to the first {MAX_OFFSET:,}; narrow the query or the dates",
                           param="cursor")
    page = SearchPage()
    parts = list(reversed(store.existing(filters.since, filters.to)))
    page.partitions = len(parts)
    if ranked:
        winners: list[tuple[float, str, int, object]] = []
        for part in parts:
            with store.connected(part.path) as db:
                if has_fts(db):
                    winners += [(*w, part.path) for w in ranked_hits(db, query, filters, offset + limit)]
        best = heapq.nsmallest(offset + limit, winners, key=lambda w: (w[0], w[1]))[offset:]
        for score, request_id, rowid, path in best:
            with store.connected(path) as db:
                hit = ranked_hit(db, query, score, request_id, rowid)
            if hit is not None:
                page.hits.append(hit)
    else:
        # Newest first; stop once no unread partition can hold a newer row than the page's last.
        unread = sorted(parts, key=lambda p: (p.last_day, p.first_day))
        while unread:
            with store.connected(unread.pop().path) as db:
                page.hits = heapq.nsmallest(
                    limit, page.hits + _recent(db, filters, after, limit), key=lambda h: h.sort_key
                )
            newest_unread = max((p.last_day for p in unread), default=None)
            if (
                len(page.hits) == limit
                and newest_unread is not None
                and day_of(page.hits[-1].fields["ts"]) > newest_unread
            ):
                break
        page.partitions -= len(unread)
    if len(page.hits) == limit:
        page.next_cursor = encode_cursor((offset + limit,) if ranked else page.hits[-1].cursor_key)
    return page
