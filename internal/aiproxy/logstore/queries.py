"""Reading single requests, dialogs and store statistics across partition files."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiproxy.logstore.database import REQUEST_COLUMNS, has_fts
from aiproxy.logstore.errors import InvalidQuery, LogNotFound
from aiproxy.logstore.search import SearchFilters, decode_cursor, encode_cursor, filter_clauses
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


def list_dialogs(
    store: Store, filters: SearchFilters | None = None, *, limit: int = 20, cursor: str = ""
) -> tuple[list[DialogSummary], str]:
    """Dialogs with activity in range, most recently active first; (page, next_cursor)."""
    filters = filters or SearchFilters()
    limit = max(1, min(int(limit or 20), 500))
    after = decode_cursor(cursor, ranked=False)
    clauses, args = filter_clauses(filters)
    where = " AND ".join(["r.dialog_id IS NOT NULL", *clauses])
    sql = (
        "SELECT r.dialog_id, COUNT(*), MIN(r.ts), MAX(r.ts), MIN(r.api_key_hash), GROUP_CONCAT(DISTINCT r.model_mapped),"
        f" MIN(r.ts || ' ' || r.request_id) FROM requests r WHERE {where} GROUP BY r.dialog_id"
    )
    merged: dict[str, DialogSummary] = {}
    for part in store.existing(filters.since, filters.to):
        with store.connected(part.path) as db:
            found_rows = db.execute_sql(sql, args).fetchall()
        for dialog_id, count, first, last, key, models, first_req in found_rows:
            found = merged.get(dialog_id)
            model_list = sorted(set((models or "").split(",")) - {""})
            if found is None:
                merged[dialog_id] = DialogSummary(dialog_id, count, first, last, key, model_list, first_req.split(" ", 1)[1])
            else:
                found.requests += count
                found.models = sorted(set(found.models) | set(model_list))
                if first < found.first_ts:
                    found.first_ts, found.first_request_id = first, first_req.split(" ", 1)[1]
                found.last_ts = max(found.last_ts, last)

    def key(d: DialogSummary) -> tuple:
        return (-d.last_ts, d.dialog_id)

    rows = [d for d in merged.values() if after is None or key(d) > (-after[0], after[1])]
    page = heapq.nsmallest(limit, rows, key=key)
    next_cursor = encode_cursor((page[-1].last_ts, page[-1].dialog_id)) if len(page) == limit else ""
    return page, next_cursor


def stats(store: Store, since: date | None = None, to: date | None = None) -> dict[str, Any]:
    parts = store.existing(since, to)
    totals: Counter = Counter()
    models: Counter = Counter()
    providers: Counter = Counter()
    statuses: Counter = Counter()
    first_ts = last_ts = None
    fts_partitions = 0
    dialog_ids: set[str] = set()  # dialogs cross partitions: count each once
    for part in parts:
        with store.connected(part.path) as db:
            count, lo, hi = db.execute_sql("SELECT COUNT(*), MIN(ts), MAX(ts) FROM requests").fetchone()
            totals["requests"] += count
            dialog_ids.update(r[0] for r in db.execute_sql("SELECT DISTINCT dialog_id FROM requests WHERE dialog_id IS NOT NULL"))
            totals["bytes"] += part.path.stat().st_size
            fts_partitions += has_fts(db)
            for model, n in db.execute_sql("SELECT COALESCE(model_mapped, ''), COUNT(*) FROM requests GROUP BY 1"):
                models[model] += n
            for provider, n in db.execute_sql("SELECT COALESCE(provider, ''), COUNT(*) FROM requests GROUP BY 1"):
                providers[provider] += n
            for status, n in db.execute_sql("SELECT COALESCE(status_code, 0), COUNT(*) FROM requests GROUP BY 1"):
                statuses[str(status)] += n
        if lo is not None:
            first_ts = lo if first_ts is None else min(first_ts, lo)
            last_ts = hi if last_ts is None else max(last_ts, hi)
    return {
        "partitions": len(parts),
        "fts_partitions": fts_partitions,
        "requests": totals["requests"],
        "dialogs": len(dialog_ids),
        "bytes": totals["bytes"],
        "first_ts": first_ts,
        "last_ts": last_ts,
        "by_model": dict(models.most_common()),
        "by_provider": dict(providers.most_common()),
        "by_status": dict(statuses.most_common()),
        "server_id": store.server_id,
        "base": str(store.base),
    }
