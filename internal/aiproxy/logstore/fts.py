"""FTS5 index maintenance for operators: build (index what is missing), rebuild, drop.

Ingest keeps the index current row by row; these commands exist for stores ingested with
FTS off, after `merge`, or to reclaim space. Every partition file found in range is visited,
whatever its granularity (the seed's `fts drop` ignored weekly files). A partition's index is whole
or absent (database.indexes_new_rows): build and rebuild fill one beside it (build_beside).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from aiproxy.logstore.damage import PartitionUnreadable, Unreadable, skipping
from aiproxy.logstore.database import BUILDING_TABLE, FTS_TABLE, create_fts, drop_fts, has_fts
from aiproxy.logstore.fragments import extract_fragments
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.store import Store
from aiproxy.logstore.unspaced import FIRST_STAND_IN
from aiproxy.logstore.unspaced import RANGES as UNSPACED_RANGES
from aiproxy.logstore.wal_limit import limit_wal
from aiproxy.logstore.writer import fragment_rows, insert_fragment

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


class IndexDropped(Exception):
    """The index a build was filling was dropped meanwhile (`logdb fts drop` in another process)."""


@dataclass
class _Counts:
    indexed: int = 0  # fragments
    skipped: int = 0  # requests without text


def index_missing(db, settings: LogStoreSettings) -> tuple[int, int]:
    """Index rows that have no fragment yet (creating the FTS table if needed), committing batch by
    batch; returns (fragments indexed, requests without text)."""
    create_fts(db)
    counts = _Counts()
    _index_after(db, FTS_TABLE, _IndexedIds(db, FTS_TABLE), 0, counts, settings)
    _optimize(db, FTS_TABLE)  # writes the whole index again
    limit_wal(db, settings)
    return counts.indexed, counts.skipped


def _index_after(db, table: str, indexed_ids: _IndexedIds, last_rowid: int, counts: _Counts,
                 settings: LogStoreSettings) -> int:
    """Index into `table` the rows after `last_rowid` it has no fragments of, one transaction per batch
    (a step of the caller's own transaction, if any), adding to `counts`; returns the last rowid read.
    Searches that never stop would otherwise keep every batch in the -wal (wal_limit.py)."""
    while True:
        batch = db.execute_sql(
            "SELECT rowid, request_id, endpoint, model_original, model_mapped, request_json, response_json"
            " FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (last_rowid, _BATCH),
        ).fetchall()
        if not batch:
            return last_rowid
        last_rowid = batch[-1][0]
        found, skipped = {}, 0
        for _rowid, request_id, endpoint, model_original, model_mapped, request_json, response_json in batch:
            if request_id in indexed_ids.done:
                continue
            fragments = extract_fragments(orjson.loads(request_json), orjson.loads(response_json))
            skipped += not fragments
            found[request_id] = fragment_rows(request_id, fragments, endpoint, model_original, model_mapped)
        with _writing_to(db, table):
            # Another writer (the gateway's live ingest, a second build) may have indexed some of
            # them since they were read: checked under the write lock, so none is indexed twice.
            indexed_ids.refresh()
            rows = [row for request_id, rows in found.items() if request_id not in indexed_ids.done for row in rows]
            db.connection().executemany(insert_fragment(table), rows)
        counts.indexed += len(rows)
        counts.skipped += skipped
        limit_wal(db, settings)


@contextlib.contextmanager
def _writing_to(db, table: str) -> Iterator[None]:
    """A write transaction on `table`; IndexDropped when it is gone."""
    with db.atomic("IMMEDIATE"):
        if not has_fts(db, table):
            raise IndexDropped
        yield


def _optimize(db, table: str) -> None:
    db.execute_sql(f"INSERT INTO {table}({table}) VALUES('optimize')")


def reindex(db, settings: LogStoreSettings) -> tuple[int, int]:
    """Drop the index and index every row anew, as index_missing counts them; one transaction: rows
    that cannot be read leave the old index as it was. For a file no other process uses (bundle import)."""
    with db.atomic("IMMEDIATE"):
        drop_fts(db)
        return index_missing(db, settings)


def build_beside(db, settings: LogStoreSettings, *, anew: bool = False) -> tuple[int, int]:
    """Index every row into BUILDING_TABLE batch by batch, then, in one transaction, the rows written
    meanwhile, and put it in place of the partition's index. A search meanwhile uses the index as it
    was (none: it says so), never a part of one, and other writers (the gateway's live ingest) wait for
    a batch, not for the whole build. An interrupted build leaves BUILDING_TABLE, which the next one
    goes on filling (`anew`, for a rebuild: starts it over). Returns what index_missing returns;
    IndexDropped when the index was dropped meanwhile (`fts drop`)."""
    counts = _Counts()
    try:
        with db.atomic("IMMEDIATE"):
            if anew:
                drop_fts(db, BUILDING_TABLE)
            create_fts(db, BUILDING_TABLE)
            indexed_ids = _IndexedIds(db, BUILDING_TABLE)
        last_rowid = _index_after(db, BUILDING_TABLE, indexed_ids, 0, counts, settings)
        with _writing_to(db, BUILDING_TABLE):
            _optimize(db, BUILDING_TABLE)  # seconds on a large index: a transaction of its own
        limit_wal(db, settings)
        with _writing_to(db, BUILDING_TABLE):
            _index_after(db, BUILDING_TABLE, indexed_ids, last_rowid, counts, settings)
            drop_fts(db)
            db.execute_sql(f'ALTER TABLE "{BUILDING_TABLE}" RENAME TO "{FTS_TABLE}"')
        limit_wal(db, settings)
    except IndexDropped:
        if not has_fts(db) or anew:
            raise
        # Another build of it finished first (and renamed what both filled): every row is indexed.
    return counts.indexed, counts.skipped


class _IndexedIds:
    """The request ids the FTS table holds fragments of, kept current by reading only the
    fragments added since the last look (FTS5 rowids grow, and a rowid range is a cheap scan)."""

    def __init__(self, db, table: str) -> None:
        self._db = db
        self._table = table
        self._seen_rowid = 0
        self.done: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        for rowid, request_id in self._db.execute_sql(
            f"SELECT rowid, request_id FROM {self._table} WHERE rowid > ?", (self._seen_rowid,)
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
    """Index what is missing (with `rebuild`: everything anew) in every partition in range: path ->
    counts. A partition without an index gets one whole (build_beside), and so does every partition
    with `rebuild`; one with an index gets what it lacks. With `unreadable`, a partition that cannot be
    read or changed, or whose index was dropped while it was built, is noted there and the others are
    still indexed; without it the error (PartitionUnreadable) is raised."""
    out = {}
    for part in store.existing(since, to):
        with skipping(unreadable), store.connected(part.path) as db:
            try:
                if rebuild or not has_fts(db):
                    indexed, skipped = build_beside(db, store.settings, anew=rebuild)
                else:  # rows an earlier version left out (an index is whole or absent): added batch by batch
                    indexed, skipped = index_missing(db, store.settings)
            except IndexDropped:
                raise PartitionUnreadable(part.path, "its index was dropped (`logdb fts drop`) while this built it",
                                          advice="the file is fine: run `logdb fts build` to build it again") from None
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
            drop_fts(db, BUILDING_TABLE)  # and what a build running (or interrupted) filled
            out[str(part.path)] = existed
    return out
