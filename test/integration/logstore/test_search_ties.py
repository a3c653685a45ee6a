"""Ranked search over many requests tied on score: the order and pages stay those of reading every
match (each request at its best fragment's score, ties by request id, that fragment the lowest rowid
among equals), while Python reads a page of matches, not every tied one."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from aiproxy.logstore import database, search
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.search import FTS_TABLE, SearchFilters, ordered_sql, ranked_sql
from aiproxy.testing.logrecords import chat_record, make_store, write_jsonl

T0 = datetime(2025, 9, 10, 8, 0, tzinfo=UTC)
WORDS = "alpha beta gamma delta omega".split()
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def _records(rng: random.Random, day: int, count: int) -> list[dict]:
    """Requests of one day, ids in an order unrelated to insertion (so rowid and request id order
    differ), most sharing a system prompt, short texts from few words (many equal scores), every
    50th with 30 messages mentioning zeta (a request with many tied fragments)."""
    records = []
    for i in range(count):
        messages = [SYSTEM] if rng.random() < 0.8 else []
        if i % 50 == 0:
            messages += [{"role": "user", "content": f"zeta {turn}"} for turn in range(30)]
        for turn in range(rng.randint(1, 2)):
            messages.append({"role": "user", "content": f"{turn} " + " ".join(rng.choices(WORDS, k=2))})
        answer = " ".join(rng.choices(WORDS, k=rng.choice((3, 3, 5))))
        records.append(chat_record(messages, answer, ts=T0 + timedelta(days=day, seconds=i),
                                   request_id=f"r-{rng.getrandbits(40):010x}", model=rng.choice(("gpt-4o", "claude")),
                                   status_code=rng.choice((200, 502))))
    return records


@pytest.fixture(scope="module")
def tied_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ties")
    rng = random.Random(11)
    write_jsonl(root / "logs" / "r.jsonl", [r for day, n in ((0, 1500), (1, 400), (2, 60)) for r in _records(rng, day, n)])
    store = make_store(root / "db")
    ingest(store, root / "logs")
    return store


def _every_match_read(db, query, filters, scale, limit):
    """ranked_hits as it was: every match read into Python, each request at its first fragment in
    (score, rowid) order, requests sorted by (score, request id)."""
    sql, args = ranked_sql(query, filters, scale, -1)
    best = {}
    for rowid, score in db.execute_sql(sql, args).fetchall():
        request_id = db.execute_sql(f"SELECT request_id FROM {FTS_TABLE} WHERE rowid = ?", (rowid,)).fetchone()[0]
        best.setdefault(request_id, (score, rowid))
    return sorted((score, request_id, rowid) for request_id, (score, rowid) in best.items())[:limit]


def _pages(store, query, filters, limit, pages=6):
    found, cursor = [], ""
    for _ in range(pages):
        page = search.search(store, query, filters, limit=limit, cursor=cursor)
        found.append([(h.fields["request_id"], h.score, h.snippet) for h in page.hits])
        cursor = page.next_cursor
        if not cursor:
            break
    return found


@pytest.mark.parametrize("query", ["helpful", "zeta", "alpha", "omega OR beta", '"alpha beta"', "NEAR(gamma delta, 2)",
                                   "role:user AND delta", "helpful -gamma", "assistant OR omega"])
@pytest.mark.parametrize("filters", [SearchFilters(), SearchFilters(model="claude"), SearchFilters(model="claude", status_code=502)])
@pytest.mark.parametrize("limit", [3, 20])
def test_pages_over_ties_are_those_of_reading_every_match(tied_store, monkeypatch, query, filters, limit):
    """Same hits, scores, snippets (the best fragment) and order, page after page."""
    ordered = []
    monkeypatch.setattr(search, "ordered_sql", lambda *args: ordered.append(args) or ordered_sql(*args))
    current = _pages(tied_store, query, filters, limit)
    with monkeypatch.context() as patched:
        patched.setattr(search, "ranked_hits", _every_match_read)
        expected = _pages(tied_store, query, filters, limit)
    assert current == expected
    hits = [hit for page in current for hit in page]
    assert len({request_id for request_id, _, _ in hits}) == len(hits)
    if query in ("helpful", "zeta"):  # the data has more ties than the first statement reads
        assert ordered
    if query == "zeta" and limit == 20:  # and requests with more tied fragments than one read of them holds
        assert any(after is not None for *_, after in ordered)


class _RowsRead:
    """Counts the rows statements on store connections hand to Python."""

    def __init__(self, monkeypatch):
        self.rows = 0
        execute = database._Database.execute_sql

        def counted(db, sql, params=None):
            rows = execute(db, sql, params).fetchall()
            self.rows += len(rows)
            return _Rows(rows)

        monkeypatch.setattr(database._Database, "execute_sql", counted)


class _Rows(list):
    def fetchall(self):
        return self

    def fetchone(self):
        return self[0] if self else None


def test_a_page_of_tied_results_reads_a_page_of_matches(tmp_path, monkeypatch):
    """Was: every fragment tied with the page's last hit was read into Python, its request id
    looked up, and all of them sorted (6 s of Python, not interruptible, for 20 results among
    1M tied fragments). Now SQLite orders them and Python reads a page."""
    records = [chat_record([SYSTEM, {"role": "user", "content": f"question {i}"}], "answer",
                           ts=T0 + timedelta(seconds=i), request_id=f"r-{(i * 7919) % 3000:05d}") for i in range(3000)]
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    rows = _RowsRead(monkeypatch)
    page = search.search(store, "helpful", limit=20, cursor=search.encode_cursor((40,)))
    assert [h.fields["request_id"] for h in page.hits] == [f"r-{i:05d}" for i in range(40, 60)]
    assert len({h.score for h in page.hits}) == 1
    assert rows.rows < 1000, rows.rows
