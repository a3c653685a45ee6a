"""Search over all partitions in range: FTS5 syntax, bm25 ranking, snippets, filters, cursors.

Without a query, requests come newest first, paged by a (ts, ts_iso, request id) cursor. With
one, each partition returns its best matches (one hit per request: its best fragment) and the
merge keeps the best overall; pages are by position (the cursor holds an offset), because a new
row changes every bm25 score and a score-based cursor would then skip the rest of the results on
a live store. `a NEAR/N b` is accepted (fts_query). A query is checked against an empty
in-memory FTS5 table first, so bad syntax becomes InvalidQuery and never an SQL error from a
partition.

Scores are comparable across partitions. FTS5's bm25 of a fragment is a sum over the query's
phrases of IDF(phrase) times a term-frequency part, with IDF from the partition's own counts;
a term in most fragments of one day (an incident) gets FTS5's floor of 1e-6 there, so that
day's on-topic requests ranked below passing mentions on other days. Here each phrase's IDF is
taken over every partition searched, as one FTS5 table holding all their fragments would
compute it: a first pass counts the fragments and each phrase's matching fragments per
partition (cheap: doclists only), then each partition ranks by its bm25 rescaled phrase by
phrase (Rescale). The length normalisation (average fragment length) stays per partition;
a NEAR group is rescaled as a whole. docs/logstore.md says what that leaves.
"""
from __future__ import annotations

import base64
import heapq
import math
import sqlite3
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from aiproxy.logstore.damage import Unreadable, skipping
from aiproxy.logstore.database import FTS_TABLE, has_fts
from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.fts import still_holds_unsplit_text
from aiproxy.logstore.fts_query import QueryShapeError, ScoredPart, scored_parts, to_fts5
from aiproxy.logstore.models import FTS_COLUMNS
from aiproxy.logstore.partitions import day_bounds, day_of
from aiproxy.logstore.snippets import snippet
from aiproxy.logstore.sqltools import chunked, in_list
from aiproxy.logstore.store import Store
from aiproxy.logstore.unspaced import has_unspaced, shown

INT32_MAX = 2**31 - 1  # logs.proto's int32 fields (status_code; limits over REST and the CLI)

MAX_LIMIT = 500
DEFAULT_LIMIT = 20
MAX_OFFSET = 10_000  # how deep ranked pages go: each page ranks everything before it again
SNIPPET_TOKENS = 16
UNSPACED_SNIPPET_TOKENS = 32  # for a query in a script written without spaces, where each character is a token
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
    model: str | None = None  # matches model_original or model_mapped, in any case
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
        return (-self.fields["ts"], descending(self.fields["ts_iso"] or ""), descending(self.fields["request_id"]))

    @property
    def cursor_key(self) -> tuple:
        return (self.fields["ts"], self.fields["ts_iso"] or "", self.fields["request_id"])


@dataclass(slots=True)
class SearchPage:
    hits: list[Hit] = field(default_factory=list)
    next_cursor: str = ""
    partitions: int = 0  # partitions read (not those left out as unreadable)
    unindexed: int = 0  # partitions a ranked search could not search: rows but no FTS index
    unsplit: int = 0  # partitions searched for unspaced text (unspaced.py) whose index holds its runs whole


def descending(text: str) -> tuple:
    """A sort key that orders texts in reverse (for keys that mix directions)."""
    return tuple(-ord(ch) for ch in text) + (1,)


def _check_fts5(queries: list[str]) -> str | None:
    """The first error FTS5 reports for one of `queries` on request_text_index's columns, or None."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
            + ", ".join(f"{c} UNINDEXED" if c == "request_id" else c for c in FTS_COLUMNS) + ")"
        )
        for query in queries:
            conn.execute(f"SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?", (query,)).fetchall()
        return None
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()


# FTS5's parse errors name a position ("syntax error near \"\"") but not the rule that was broken.
_SYNTAX_ERRORS = ("fts5: syntax error", "unterminated string", "unknown special query")
SYNTAX_HINT = ("; AND, OR and NOT (or a leading -) need a word on each side, and every ( and \" must be closed:"
               " put text in double quotes to search for it as written")


def validate_query(query: str, typed: str | None = None) -> None:
    """Raise InvalidQuery unless `query` parses as FTS5 for request_text_index's columns. The message
    quotes `typed`, the query as the client wrote it, and `query` too when to_fts5 rewrote it."""
    typed = query if typed is None else typed
    if "\x00" in typed:  # FTS5 reads NUL as the end of the query: its error would name a cut-off query
        raise InvalidQuery(f"invalid search query {typed!r}: it holds a NUL character, which cannot be searched for",
                           param="q")
    error = _check_fts5([query])
    if error is not None:
        written = shown(query)  # without the separators between characters (unspaced.py)
        rewritten = f" (as FTS5: {written!r})" if written != typed else ""
        hint = SYNTAX_HINT if error.startswith(_SYNTAX_ERRORS) else ""
        raise InvalidQuery(f"invalid search query {typed!r}{rewritten}: {error}{hint}", param="q")


def encode_cursor(key: tuple) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


# A cursor's parts by letter: i an integer, s a string.
_CURSOR_PARTS = {"i": int, "s": str}
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
        return tuple(part for part, _ in parts)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidQuery(
            "invalid cursor (use next_cursor from the previous page)", param="cursor"
        ) from None


def _spellings(column: str) -> str:
    """A subquery (one `?`, the value) for the values of `column` equal to it but for the case of
    ASCII letters (SQLite's NOCASE). It steps through the column's index one distinct value at a time,
    so `column IN` it still looks rows up by that index: `column = ? COLLATE NOCASE` cannot use it
    and read every row of a partition for a model it does not hold."""
    return (f"(WITH RECURSIVE v(x) AS (SELECT MIN({column}) FROM requests UNION ALL"
            f" SELECT (SELECT MIN({column}) FROM requests WHERE {column} > v.x) FROM v WHERE v.x IS NOT NULL)"
            " SELECT x FROM v WHERE x = ? COLLATE NOCASE)")


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
    if filters.model:  # in any case, as routing reads an alias
        clauses.append(f"({col.format('model_original')} IN {_spellings('model_original')}"
                       f" OR {col.format('model_mapped')} IN {_spellings('model_mapped')})")
        args += [filters.model, filters.model]
    if filters.provider:  # the settings lower-case provider names; no index on the column to lose
        clauses.append(f"{col.format('provider')} = ? COLLATE NOCASE")
        args.append(filters.provider)
    for column in ("api_key_hash", "dialog_id"):
        value = getattr(filters, column)
        if value:
            clauses.append(f"{col.format(column)} = ?")
            args.append(value)
    if filters.status_code == 0:
        # The records listed with status_code 0: none logs.proto's int32 can hold (NULL, text, a fraction:
        # the column's INTEGER affinity stores a whole REAL as an integer) or 0 itself (protomap._int).
        status = col.format("status_code")
        clauses.append(f"({status} IS NULL OR {status} = 0 OR typeof({status}) != 'integer'"
                       f" OR {status} NOT BETWEEN {-INT32_MAX - 1} AND {INT32_MAX})")
    elif filters.status_code is not None:
        clauses.append(f"{col.format('status_code')} = ?")
        args.append(filters.status_code)
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


_IDF_FLOOR = 1e-6  # FTS5's bm25 takes an IDF <= 0 (a phrase in half the fragments or more) as this


# A part whose factor is this close to the folded one's is scaled with it: its own scan would cost
# a join over all its matches to move its share of a score by at most this fraction.
RESCALE_TOLERANCE = 0.05
# Parts read alone at most, those whose factor differs most from the folded one's (the others are scaled
# with it): each is a join, and SQLite joins at most 64 tables (`w0 OR … OR w69` was an SQL error).
MAX_RESCALED_PARTS = 32


def _idf(fragments: int, matching: int) -> float:
    """IDF as FTS5's bm25 computes it (fts5_aux.c) from a fragment count and a phrase's matches."""
    idf = math.log((fragments - matching + 0.5) / (matching + 0.5))
    return idf if idf > 0.0 else _IDF_FLOOR


def _varint(data: bytes) -> int:
    """The SQLite varint at the start of `data` (big-endian 7-bit groups, a 9th byte of 8 bits)."""
    value = 0
    for i, byte in enumerate(data[:9]):
        if i == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value
    raise ValueError("truncated varint")


def fragment_count(db) -> int:
    """The partition's fragment count as FTS5's bm25 reads it (xRowCount): the first varint of the
    index's averages record (rowid 1 of its _data table), O(1) where COUNT(*) reads every row."""
    row = db.execute_sql(f'SELECT block FROM "{FTS_TABLE}_data" WHERE id = 1').fetchone()
    if row is not None and row[0]:
        try:
            return _varint(bytes(row[0]))
        except ValueError:
            pass
    return db.execute_sql(f"SELECT COUNT(*) FROM {FTS_TABLE}").fetchone()[0]


def phrase_counts(db, phrases: list[str]) -> dict[str, int]:
    """Fragments of this partition matching each phrase (with its column filter): FTS5's own
    count for the phrase's IDF. COUNT(*) walks doclists only."""
    sql = f"SELECT COUNT(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?"
    return {phrase: db.execute_sql(sql, (phrase,)).fetchone()[0] for phrase in phrases}


@dataclass(slots=True, frozen=True)
class Rescale:
    """One partition's scores under the IDFs of all partitions searched:
    base × bm25(query) + Σ weight × bm25(part), each part counted only where its guards match.

    bm25(query) is Σ over the scored parts of local IDF × tf-part; a part's score rescaled is
    global IDF / local IDF times its bm25 alone. Folding one part (the one with the most matches:
    its scan would cost most) into `base` leaves one extra scan per other part whose factor
    differs. The default (1, no terms) is the partition's own bm25."""

    base: float = 1.0
    terms: tuple[tuple[str, tuple[str, ...], float], ...] = ()  # (part query, guards, weight - base)


def rescale(parts: list[ScoredPart], fragments: int, counts: dict[str, int], total_fragments: int,
            total_counts: dict[str, int]) -> Rescale:
    """The Rescale of a partition holding `fragments` fragments and `counts` matches per phrase,
    among partitions holding `total_fragments` and `total_counts`."""
    if not parts:
        return Rescale()
    factors = [
        sum(_idf(total_fragments, total_counts[p]) for p in part.phrases)
        / sum(_idf(fragments, counts[p]) for p in part.phrases)
        for part in parts
    ]
    folded = max(range(len(parts)), key=lambda i: sum(counts[p] for p in parts[i].phrases))
    base = factors[folded]
    terms = sorted(
        ((part.query, part.guards, factor - base)
         for i, (part, factor) in enumerate(zip(parts, factors, strict=True))
         if i != folded and abs(factor - base) > RESCALE_TOLERANCE * base),
        key=lambda term: -abs(term[2]),
    )
    return Rescale(base, tuple(terms[:MAX_RESCALED_PARTS]))


def _scored_sql(query: str, filters: SearchFilters, scale: Rescale | None) -> tuple[str, list[Any]]:
    """`SELECT m.id, … AS total FROM …`: (fragment rowid, score) of every match of `query` whose
    request passes `filters`. The FTS match drives; each match's request is found by its key
    (request_id), never through an index on a filter column."""
    scale = scale or Rescale()
    fts = FTS_TABLE
    terms, term_args, joins, join_args = ["? * m.score"], [scale.base], [], []
    for i, (part, guards, weight) in enumerate(scale.terms):
        term = f"? * IFNULL(u{i}.score, 0.0)"
        if guards:
            inside = " AND ".join(f"m.id IN (SELECT rowid FROM {fts} WHERE {fts} MATCH ?)" for _ in guards)
            term = f"CASE WHEN {inside} THEN {term} ELSE 0.0 END"
            term_args += guards
        terms.append(term)
        term_args.append(weight)
        joins.append(f" LEFT JOIN (SELECT rowid AS id, bm25({fts}) AS score FROM {fts} WHERE {fts} MATCH ?) u{i}"
                     f" ON u{i}.id = m.id")
        join_args.append(part)
    clauses, filter_args = filter_clauses(filters, indexed=False)
    requests = f" CROSS JOIN requests r ON r.request_id = {fts}.request_id" if clauses else ""
    where = " AND ".join([f"{fts} MATCH ?", *clauses])
    sql = (
        f"SELECT m.id, {' + '.join(terms)} AS total"
        f" FROM (SELECT {fts}.rowid AS id, bm25({fts}) AS score FROM {fts}{requests} WHERE {where}) m"
        f"{''.join(joins)}"
    )
    return sql, [*term_args, query, *filter_args, *join_args]


def ranked_sql(query: str, filters: SearchFilters, scale: Rescale | None = None, rows: int = -1) -> tuple[str, list[Any]]:
    """ranked_hits' first statement: (fragment rowid, score) of the best `rows` matches of `query`
    (-1: all) whose request passes `filters`, best first. It reads no request id: ordering by one
    would read it for every match."""
    sql, args = _scored_sql(query, filters, scale)
    return f"{sql} ORDER BY total, m.id LIMIT ?", [*args, rows]


# A fragment's request id, from the FTS5 table's content table (`%_content`: id, then c0, c1… in the
# table's column order) by its integer key: a lookup through the FTS5 table costs 1.7 times as much.
_REQUEST_ID = f"(SELECT c{FTS_COLUMNS.index('request_id')} FROM {FTS_TABLE}_content WHERE id = s.id)"


def ordered_sql(
    query: str, filters: SearchFilters, scale: Rescale | None, rows: int, worst: float = math.inf,
    after: tuple[float, str, int] | None = None,
) -> tuple[str, list[Any]]:
    """ranked_hits' second statement: (score, request_id, fragment rowid) of the first `rows` matches
    scoring at most `worst`, in (score, request_id, rowid) order, after the match `after`. A request's
    first match in that order is its best fragment (the lowest rowid among equals), and requests
    come in search's order, ties broken by request id. SQLite's bounded sort orders them: a page
    costs no more Python however many tie."""
    sql, args = _scored_sql(query, filters, scale)
    conditions, bounds = [], []
    if math.isfinite(worst):
        conditions.append("s.total <= ?")
        bounds.append(worst)
    if after is not None:
        conditions.append("(s.total, request_id, s.id) > (?, ?, ?)")
        bounds += after
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # LIMIT -1 keeps SQLite from flattening the subquery into the WHERE, which computed each score twice.
    return (f"SELECT s.total, {_REQUEST_ID} AS request_id, s.id FROM ({sql} LIMIT -1) s{where}"
            " ORDER BY s.total, request_id, s.id LIMIT ?", [*args, *bounds, rows])


def _best_requests(db, rows: list[tuple[int, float]], limit: int) -> tuple[list[tuple[float, str, int]], bool]:
    """The best `limit` requests among `rows` (fragment rowid, score; best first) by (score,
    request_id), and whether `rows` went past every request tied with the last of them."""
    best: dict[str, tuple[float, int]] = {}
    cutoff: float | None = None
    for chunk in chunked(rows):
        marks, args = in_list([rowid for rowid, _ in chunk])
        request_ids = dict(db.execute_sql(f"SELECT rowid, request_id FROM {FTS_TABLE} WHERE rowid IN {marks}", args))
        for rowid, score in chunk:
            if cutoff is not None and score > cutoff:
                return _first(best, limit), True
            request_id = request_ids[rowid]  # read in the ranking's snapshot (ranked_hits)
            if request_id not in best:
                best[request_id] = (score, rowid)
                if len(best) == limit:
                    cutoff = score
    return _first(best, limit), False


def _first(best: dict[str, tuple[float, int]], limit: int) -> list[tuple[float, str, int]]:
    return sorted((score, request_id, rowid) for request_id, (score, rowid) in best.items())[:limit]


def _ordered_requests(db, query: str, filters: SearchFilters, scale: Rescale | None, limit: int, worst: float,
                      rows: int) -> list[tuple[float, str, int]]:
    """The best `limit` requests among the matches scoring at most `worst`: ordered_sql read `rows`
    matches at a time, twice as many each time (a request may have many matching fragments)."""
    best: dict[str, tuple[float, str, int]] = {}
    after = None
    while True:
        sql, args = ordered_sql(query, filters, scale, rows, worst, after)
        matches = db.execute_sql(sql, args).fetchall()
        for match in matches:
            if match[1] not in best:
                best[match[1]] = match
                if len(best) == limit:
                    return list(best.values())
        if len(matches) < rows:
            return list(best.values())
        after, rows = matches[-1], 2 * rows


def ranked_hits(db, query: str, filters: SearchFilters, scale: Rescale | None, limit: int) -> list[tuple[float, str, int]]:
    """One partition's best `limit` requests by (score, request_id): (score of the request's best
    fragment, request_id, that fragment's rowid). SQLite sorts only the leading fragments (a
    bounded sort costs half of sorting every match), and request ids are read for those only.
    When those hold fewer requests, or requests tied with the last one may follow (a shared system
    prompt scores the same everywhere), ordered_sql orders every fragment scoring at most the last
    one's score (or all) by (score, request_id), and a page of them is read.
    All in one read transaction: a rowid is a fragment's only in the snapshot it was read in (an
    `fts rebuild` committing between two reads numbers the fragments anew)."""
    wanted = 4 * limit + 64
    sql, args = ranked_sql(query, filters, scale, wanted)
    with db.atomic():
        rows = db.execute_sql(sql, args).fetchall()
        best, complete = _best_requests(db, rows, limit)
        if complete or len(rows) < wanted:
            return best
        worst = best[-1][0] if len(best) == limit else math.inf
        return _ordered_requests(db, query, filters, scale, limit, worst, wanted)


def ranked_hit(db, query: str, score: float, request_id: str, rowid: int) -> Hit | None:
    """A winner's row and snippet, read in one snapshot (computed for the final page only: snippets
    are costly, so in a later snapshot than the ranking's). The snippet is of the fragment `rowid`
    while it is still that request's; after an `fts rebuild` meanwhile (fragments numbered anew,
    `rowid` another request's or none), of the request's best-ranked matching fragment."""
    tokens = UNSPACED_SNIPPET_TOKENS if has_unspaced(query) else SNIPPET_TOKENS
    with db.atomic():
        text = snippet(db, query, tokens, "request_id = ? AND rowid = ?", (request_id, rowid))
        if text is None:
            text = snippet(db, query, tokens, "request_id = ? ORDER BY rank LIMIT 1", (request_id,)) or ""
        row = db.execute_sql(
            f"SELECT {_RESULT_COLUMNS} FROM requests r WHERE r.request_id = ? ORDER BY r.server_id LIMIT 1",
            (request_id,),
        ).fetchone()
    return _hit(row, score, shown(text)) if row is not None else None


def _scored_parts(query: str) -> list[ScoredPart] | None:
    """The query's scored parts, or None (rank with each partition's own statistics) for a shape
    fts_query does not take apart or parts FTS5 would not accept alone: never an SQL error."""
    try:
        parts = scored_parts(query)
    except QueryShapeError:
        return None
    derived = sorted({q for part in parts for q in (part.query, *part.phrases, *part.guards)})
    return parts if _check_fts5(derived) is None else None


def _rescaled(
    store: Store, parts: list, query: str, page: SearchPage, unreadable: Unreadable | None
) -> list[tuple[object, Rescale | None]]:
    """The partitions to rank (those with an FTS index and fragments), each with its Rescale;
    counts in `page` the partitions that hold rows but no index (not searched) and, for a query
    in a script written without spaces, those whose index holds such text as an earlier version
    indexed it (its words are not found there). Phrases are counted only when several partitions hold fragments: one
    partition's own statistics are the global ones. Partitions that cannot be read are left out (noted)."""
    found: list[tuple[object, int]] = []
    for part in parts:
        with skipping(unreadable), store.connected(part.path) as db:
            if not has_fts(db):
                page.unindexed += db.execute_sql("SELECT EXISTS (SELECT 1 FROM requests)").fetchone()[0]
            elif rows := fragment_count(db):
                found.append((part.path, rows))
                page.unsplit += has_unspaced(query) and still_holds_unsplit_text(db)
    scored = _scored_parts(query) if len(found) > 1 else None
    if scored is None:
        return [(path, None) for path, _ in found]
    phrases = sorted({p for part in scored for p in part.phrases})
    counts, fragments = {}, {}
    for path, _ in found:
        # One snapshot: rows a live ingest commits between the two reads would count more matches
        # than fragments (IDF of a negative ratio: "math domain error").
        with skipping(unreadable), store.connected(path) as db, db.atomic():
            fragments[path], counts[path] = fragment_count(db), phrase_counts(db, phrases)
    found = [(path, fragments[path]) for path, _ in found if path in counts]
    total = sum(rows for _, rows in found)
    totals = {p: sum(c[p] for c in counts.values()) for p in phrases}
    return [(path, rescale(scored, rows, counts[path], total, totals)) for path, rows in found]


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
    store: Store,
    query: str = "",
    filters: SearchFilters | None = None,
    *,
    limit: int = 20,
    cursor: str = "",
    unreadable: Unreadable | None = None,
) -> SearchPage:
    """A page of results. With `unreadable`, partitions that cannot be read are left out and noted
    there (the caller warns); without it, PartitionUnreadable is raised."""
    filters = filters or SearchFilters()
    limit = page_size(limit)
    typed = (query or "").strip()
    query = to_fts5(typed)
    ranked = bool(query)
    if ranked:
        validate_query(query, typed)
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
        ranked_parts = _rescaled(store, parts, query, page, unreadable)
        for path, scale in ranked_parts:
            with skipping(unreadable), store.connected(path) as db:
                winners += [(*w, path) for w in ranked_hits(db, query, filters, scale, offset + limit)]
        best = heapq.nsmallest(offset + limit, winners, key=lambda w: (w[0], w[1]))[offset:]
        for score, request_id, rowid, path in best:
            with skipping(unreadable), store.connected(path) as db:
                hit = ranked_hit(db, query, score, request_id, rowid)
                if hit is not None:
                    page.hits.append(hit)
    else:
        # Newest first; stop once no unread partition can hold a newer row than the page's last.
        unread = sorted(parts, key=lambda p: (p.last_day, p.first_day))
        while unread:
            with skipping(unreadable), store.connected(unread.pop().path) as db:
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
    if unreadable:
        page.partitions -= sum(part.path in unreadable for part in parts)
    if len(page.hits) == limit:
        page.next_cursor = encode_cursor((offset + limit,) if ranked else page.hits[-1].cursor_key)
    return page
