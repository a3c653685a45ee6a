"""FTS5 index maintenance for operators: build (index what is missing), rebuild, drop.

Ingest keeps the index current row by row; these commands exist for stores ingested with
FTS off, after `merge`, or to reclaim space. Every partition file found in range is visited,
whatever its granularity (the seed's `fts drop` ignored weekly files).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson

from aiproxy.logstore.damage import Unreadable, skipping
from aiproxy.logstore.database import FTS_TABLE, create_fts, drop_fts, has_fts
from aiproxy.logstore.fragments import extract_fragments
from aiproxy.logstore.store import Store
from aiproxy.logstore.unspaced import FIRST_STAND_IN
from aiproxy.logstore.unspaced import RANGES as UNSPACED_RANGES
from aiproxy.logstore.writer import INSERT_FRAGMENT, fragment_rows

_BATCH = 500
_TERMS = f"{FTS_TABLE}_terms"  # the index's tokens (fts5vocab), in each connection's temp schema
_unsplit_seen: dict[Path, tuple[tuple, bool]] = {}  # holds_unsplit_text's answers, with the index's stamp


def holds_unsplit_text(db) -> bool:
    """Whether the partition's index holds text of a script written without spaces indexed before
    each of its characters was a token (unspaced.py): by an earlier version, or copied from such a
    store. Its runs are whole tokens, in which a word is not found. `fts rebuild` indexes them anew.
    A token of this version is one letter, or a letter with the stand-ins of its marks."""
    db.execute_sql(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{_TERMS} USING fts5vocab(main, {FTS_TABLE}, row)")
    # A token of the scripts whose second character is not a mark's stand-in: it holds two letters.
    sql = f"SELECT 1 FROM temp.{_TERMS} WHERE term >= ? AND term <= ? AND length(term) > 1 AND substr(term, 2, 1) < ?"
    bounds = [(chr(lo), chr(hi) + chr(0x10FFFF), FIRST_STAND_IN) for lo, hi in UNSPACED_RANGES]
    return any(db.execute_sql(sql + " LIMIT 1", args).fetchone() for args in bounds)


def still_holds_unsplit_text(db) -> bool:
    """holds_unsplit_text for search: reading the index's tokens of those scripts costs 20 ms on a
    partition with 3 MB of them, so an answer is kept while the index's averages and structure
    records (rowids 1 and 10 of its _data table, which every write to it changes) stay as they were."""
    stamp = tuple(db.execute_sql(f'SELECT block FROM "{FTS_TABLE}_data" WHERE id IN (1, 10) ORDER BY id'))
    known = _unsplit_seen.get(db.file)
    if known is None or known[0] != stamp:
        known = _unsplit_seen[db.file] = (stamp, holds_unsplit_text(db))
    return known[1]


def index_missing(db) -> tuple[int, int]:
    """Index rows that have no fragment yet (creating the FTS table if needed); returns
    (fragments indexed, requests without text)."""
    create_fts(db)
    indexed_ids = _IndexedIds(db)
    indexed = skipped = 0
    last_rowid = 0
    while True:
        batch = db.execute_sql(
            "SELECT rowid, request_id, endpoint, model_original, model_mapped, request_json, response_json"
            " FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (last_rowid, _BATCH),
        ).fetchall()
        if not batch:
            break
        last_rowid = batch[-1][0]
        found = {}
        for _rowid, request_id, endpoint, model_original, model_mapped, request_json, response_json in batch:
            if request_id in indexed_ids.done:
                continue
            fragments = extract_fragments(orjson.loads(request_json), orjson.loads(response_json))
            skipped += not fragments
            found[request_id] = fragment_rows(request_id, fragments, endpoint, model_original, model_mapped)
        with db.atomic("IMMEDIATE"):
            # Another writer (the gateway's live ingest, a second build) may have indexed some of
            # them since they were read: checked under the write lock, so none is indexed twice.
            indexed_ids.refresh()
            rows = [row for request_id, rows in found.items() if request_id not in indexed_ids.done for row in rows]
            db.connection().executemany(INSERT_FRAGMENT, rows)
        indexed += len(rows)
    db.execute_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES('optimize')")
    return indexed, skipped


def reindex(db) -> tuple[int, int]:
    """Drop the index and index every row anew, as index_missing counts them; one transaction: rows
    that cannot be read leave the old index as it was."""
    with db.atomic("IMMEDIATE"):
        drop_fts(db)
        return index_missing(db)


class _IndexedIds:
    """The request ids the FTS table holds fragments of, kept current by reading only the
    fragments added since the last look (FTS5 rowids grow, and a rowid range is a cheap scan)."""

    def __init__(self, db) -> None:
        self._db = db
        self._seen_rowid = 0
        self.done: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        for rowid, request_id in self._db.execute_sql(
            f"SELECT rowid, request_id FROM {FTS_TABLE} WHERE rowid > ?", (self._seen_rowid,)
        ):
            self.done.add(request_id)
            self._seen_rowid = max(self._seen_rowid, rowid)


def build(
    store: Store,
    since: date | None = None,
    to: date | None = None,
    *,
    rebuild: bool = False,
    unreadable: Unreadable | None = None,
) -> dict[str, dict]:
    """Index what is missing (with `rebuild`: drop first) in every partition in range: path ->
    counts. With `unreadable`, a partition that cannot be read or changed is noted there and the
    others are still indexed; without it the error (PartitionUnreadable) is raised."""
    out = {}
    for part in store.existing(since, to):
        with skipping(unreadable), store.connected(part.path) as db:
            if rebuild:
                indexed, skipped = reindex(db)
            else:  # commits batch by batch: what was indexed stays, a later run does the rest
                indexed, skipped = index_missing(db)
            out[str(part.path)] = {"indexed": indexed, "skipped": skipped}
    return out


def drop(
    store: Store, since: date | None = None, to: date | None = None, *, unreadable: Unreadable | None = None
) -> dict[str, bool]:
    """Drop the index of every partition in range: path -> whether it had one. With `unreadable`,
    a partition that cannot be changed (not a database, read-only) is noted there and the others
    are still dropped, as the seed's `fts drop` did; without it the error is raised."""
    out = {}
    for part in store.existing(since, to):
        with skipping(unreadable), store.connected(part.path) as db:
            existed = has_fts(db)
            drop_fts(db)
            out[str(part.path)] = existed
    return out
