"""Incremental FTS, FTS5 syntax, filters, cursors and hostile queries on real partitions."""

import base64
import json
import math
import random
import sqlite3
from datetime import UTC, date, datetime, timedelta

import pytest

from aiproxy.logstore import fts
from aiproxy.logstore import search as search_module
from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.fts_query import to_fts5
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.queries import get_request, list_dialogs
from aiproxy.logstore.search import Rescale, SearchFilters, encode_cursor, ordered_sql, ranked_sql, search
from aiproxy.testing.logdb_processes import finished, logdb
from aiproxy.testing.logrecords import chat_record, make_store, write_jsonl

T0 = datetime(2025, 9, 10, 8, 0, tzinfo=UTC)
TEXTS = [
    ("the database timeout happened during retry", "increase the timeout", "gpt-4o", "openrouter", 200),
    ("machine learning basics", "start with linear models", "claude", "openrouter", 200),
    ("what is the capital of France", "Paris is the capital", "gemini-flash", "gemini", 200),
    ("error then a long pause and eventually a timeout", "check the network", "gpt-4o", "openrouter", 502),
    ("kubernetes deployment strategy", "use rolling updates", "claude", "openrouter", 200),
]


@pytest.fixture
def store(tmp_path):
    records = [
        chat_record([{"role": "user", "content": q}], a, ts=T0 + timedelta(hours=6 * i), model=m, mapped=f"{p}/{m}",
                    provider=p, status_code=s, key=f"k{i % 2}")
        for i, (q, a, m, p, s) in enumerate(TEXTS)
    ]
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    return store


def _ids(page):
    return [h.fields["model_original"] + ":" + str(h.fields["status_code"]) for h in page.hits]


def test_rows_are_searchable_as_soon_as_they_are_ingested(store, tmp_path):
    """Seed §11: FTS was a full rebuild per run; here every inserted row is indexed at once."""
    assert len(search(store, "timeout").hits) == 2
    write_jsonl(tmp_path / "logs" / "r.jsonl", [chat_record([{"role": "user", "content": "zebra timeout"}], "ok", ts=T0)])
    ingest(store, tmp_path / "logs")
    assert len(search(store, "timeout").hits) == 3 and len(search(store, "zebra").hits) == 1
    ingest(store, tmp_path / "logs")  # re-running indexes nothing twice
    with sqlite3.connect(store.existing()[0].path) as conn:
        counts = conn.execute("SELECT request_id, COUNT(*) FROM request_text_index GROUP BY request_id, role").fetchall()
    assert all(n == 1 for _, n in counts)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("timeout AND retry", 1),
        ("machine OR kubernetes", 2),
        ("timeout NOT (retry OR increase)", 1),  # operators apply per message (one FTS row each)
        ("NEAR(error timeout, 10)", 1),
        ("error NEAR/10 timeout", 1),  # the seed README's FTS4 form is accepted
        ('"capital of France"', 1),
        ("kube*", 1),
        ("role:assistant AND content:Paris", 1),
        ("model_original:claude", 2),
        ('content:"capital of France"', 1),  # a column filter before a phrase or a group keeps both
        ("content:(kubernetes OR basics)", 2),
        ("role:assistant AND content:(Paris OR linear)", 2),
        ("Role:assistant AND Content:Paris", 1),  # FTS5 column names ignore case
        ("timeout* NEAR/3 retry", 1),
        ("timeout -eventually", 1),  # `-word` excludes it (within a message, like every operator)
        ('timeout -"during retry"', 2),  # so does `-"phrase"` (it required the phrase)
        ("timeout -(retry OR increase)", 1),  # and `-(group)` (a syntax error before)
    ],
)
def test_fts5_syntax(store, query, expected):
    assert len(search(store, query).hits) == expected


def test_results_rank_by_bm25_and_carry_snippets(store):
    page = search(store, "timeout")
    assert page.hits[0].score <= page.hits[1].score
    assert all("[timeout]" in h.snippet.lower() for h in page.hits)


def test_filters(store):
    assert _ids(search(store, "timeout", SearchFilters(status_code=502))) == ["gpt-4o:502"]
    assert len(search(store, "", SearchFilters(provider="gemini")).hits) == 1
    assert len(search(store, "", SearchFilters(model="openrouter/claude")).hits) == 2
    assert len(search(store, "", SearchFilters(api_key_hash="kh-k0")).hits) == 3
    assert len(search(store, "", SearchFilters(since=date(2025, 9, 11))).hits) == 2
    assert len(search(store, "", SearchFilters(to=date(2025, 9, 10))).hits) == 3
    dialog = search(store, "France").hits[0].fields["dialog_id"]
    assert len(search(store, "", SearchFilters(dialog_id=dialog)).hits) == 1


def test_status_code_0_finds_the_records_listed_with_status_0(store, tmp_path):
    """A record without a usable status (a seed stream error whose `code` was a word) is listed with
    status_code 0, but filtering on 0 found nothing, over REST (`status_code=0`), gRPC and `--status 0`
    alike: the one value that could show those records was a silently empty answer."""
    lost = {**chat_record([{"role": "user", "content": "a timeout in the stream"}], "", ts=T0), "status_code": "rate_limit"}
    write_jsonl(tmp_path / "logs" / "r.jsonl", [lost])
    ingest(store, tmp_path / "logs")
    for query in ("", "timeout"):
        hits = search(store, query, SearchFilters(status_code=0)).hits
        assert [h.fields["status_code"] for h in hits] == [None], query
    assert len(list_dialogs(store, SearchFilters(status_code=0))[0]) == 1
    assert _ids(search(store, "timeout", SearchFilters(status_code=502))) == ["gpt-4o:502"]


@pytest.mark.parametrize("model", ["GPT-4o", "gpt-4O", "OpenRouter/GPT-4o"])
def test_the_model_filter_ignores_case_as_routing_does(store, model):
    """Was: an exact, case-sensitive match, so `--model GPT-4o` found nothing although the gateway
    routes any case of an alias (docs/logstore.md, Filters)."""
    assert _ids(search(store, "", SearchFilters(model=model))) == ["gpt-4o:502", "gpt-4o:200"]
    assert _ids(search(store, "timeout", SearchFilters(model=model, status_code=502))) == ["gpt-4o:502"]
    assert len(list_dialogs(store, SearchFilters(model=model))[0]) == 2


@pytest.mark.parametrize("provider", ["Gemini", "GEMINI"])
def test_the_provider_filter_ignores_case_as_provider_names_do(store, provider):
    """Provider names are lower-cased when the settings are read (`[default.providers.Gemini]` is
    `gemini`); was: `--provider Gemini` matched nothing."""
    assert _ids(search(store, "", SearchFilters(provider=provider))) == ["gemini-flash:200"]
    assert _ids(search(store, "capital", SearchFilters(provider=provider))) == ["gemini-flash:200"]


@pytest.mark.parametrize("query", ["", "timeout OR machine OR kubernetes OR capital OR error"])
def test_cursor_paging_visits_every_hit_once(store, query):
    seen, cursor = [], ""
    for _ in range(10):
        page = search(store, query, limit=2, cursor=cursor)
        seen += [h.fields["request_id"] for h in page.hits]
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5


def test_cursor_paging_over_tied_scores_loses_nothing(tmp_path):
    """Requests sharing a system prompt score the same; paging must still visit each exactly once."""
    system = {"role": "system", "content": "You are a helpful assistant."}
    records = [chat_record([system, {"role": "user", "content": f"question {i}"}], f"answer {i}",
                           ts=T0 + timedelta(minutes=i)) for i in range(30)]
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    seen, cursor = [], ""
    for _ in range(30):
        page = search(store, "helpful", limit=4, cursor=cursor)
        seen += [h.fields["request_id"] for h in page.hits]
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 30


@pytest.mark.parametrize("query", ["a AND", '"open', "(", "*", 'x"y', "NOT"])
def test_broken_syntax_raises_invalid_query_and_changes_nothing(store, query):
    with pytest.raises(InvalidQuery):
        search(store, query)
    assert len(search(store, "").hits) == 5


@pytest.mark.parametrize(
    ("query", "expected"),
    [("'; DROP TABLE requests; --", 0), ("timeout.", 2), ("France?", 1), ("content:Paris!", 1), ("gpt-4*", 2),
     ("https://kubernetes", 0), ("nosuchcolumn:x", 0)],
)
def test_terms_with_punctuation_are_searched_as_text(store, query, expected):
    """What users type (`gpt-4`, `what's`, a pasted SQL string) is a phrase, never FTS5 or SQL syntax."""
    assert len(search(store, query).hits) == expected
    assert len(search(store, "").hits) == 5


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("a\x00b", "invalid search query 'a\\x00b': it holds a NUL character"),
        ("NEAR(a b, -1)", "invalid search query 'NEAR(a b, -1)' (as FTS5: 'NEAR(a b, NOT 1)'): fts5: syntax error"),
        ("a AND", "invalid search query 'a AND': fts5: syntax error"),
    ],
)
def test_an_invalid_query_is_quoted_as_typed(store, query, message):
    """The message quoted the query after its rewriting: `a<NUL>b` came back as `'"a\\x00b"': unterminated
    string`, quotes the client never typed (FTS5 reads a NUL as the end of the query)."""
    with pytest.raises(InvalidQuery) as info:
        search(store, query)
    assert info.value.message.startswith(message), info.value.message


@pytest.mark.parametrize("query", ["a AND", "(retry", "-retry", '"unterminated', "NEAR(a b", "*"])
def test_a_query_fts5_cannot_parse_says_how_to_write_it(store, query):
    """`fts5: syntax error near ""` alone did not say what was wrong with `(retry` or `-retry`."""
    with pytest.raises(InvalidQuery) as info:
        search(store, query)
    assert "need a word on each side" in info.value.message and "double quotes" in info.value.message


def test_bad_cursor_is_invalid_query(store):
    with pytest.raises(InvalidQuery):
        search(store, "timeout", cursor="not-a-cursor")


def test_fts_drop_build_rebuild(store):
    dropped = fts.drop(store)
    assert all(dropped.values())
    assert search(store, "timeout").hits == []
    built = fts.build(store)
    assert sum(r["indexed"] for r in built.values()) > 0
    assert len(search(store, "timeout").hits) == 2
    assert sum(r["indexed"] for r in fts.build(store).values()) == 0  # build only adds what is missing
    rebuilt = fts.build(store, rebuild=True)
    assert sum(r["indexed"] for r in rebuilt.values()) == sum(r["indexed"] for r in built.values())
    assert len(search(store, "timeout").hits) == 2


def test_fts_disabled_store_is_indexed_by_build(tmp_path):
    write_jsonl(tmp_path / "logs" / "r.jsonl", [chat_record([{"role": "user", "content": "late index"}], "x", ts=T0)])
    store = make_store(tmp_path / "db", fts_enabled=False)
    ingest(store, tmp_path / "logs")
    assert search(store, "late").hits == []
    fts.build(store)
    assert len(search(store, "late").hits) == 1


def test_fts_build_beside_an_ingest_indexes_each_row_once(tmp_path):
    """Was: `fts build` listed the indexed rows once, up front, so rows an ingester stored (and
    indexed) while it ran were indexed a second time: duplicate fragments skew bm25 and snippets."""
    old = [chat_record([{"role": "user", "content": f"old question {i}"}], "old answer", ts=T0 + timedelta(seconds=i))
           for i in range(3)]
    write_jsonl(tmp_path / "old" / "r.jsonl", old)
    store = make_store(tmp_path / "db", fts_enabled=False)
    ingest(store, tmp_path / "old")
    write_jsonl(tmp_path / "new" / "r.jsonl", [chat_record([{"role": "user", "content": "new question"}], "new answer",
                                                           ts=T0 + timedelta(seconds=9))])
    ingester = make_store(tmp_path / "db")  # another process's connections, FTS on (the gateway's live ingest)
    [part] = store.existing()
    with store.connected(part.path) as db:
        def ingest_when_build_reads_rows(action, table, *_):
            if action == sqlite3.SQLITE_READ and table == "requests" and not ingested:
                ingested.append(ingest(ingester, tmp_path / "new").rows_inserted)
            return sqlite3.SQLITE_OK

        ingested: list[int] = []
        db.connection().set_authorizer(ingest_when_build_reads_rows)
        fts.index_missing(db, store.settings)
        db.connection().set_authorizer(None)
        fragments = db.execute_sql("SELECT request_id, role, content FROM request_text_index").fetchall()
    assert ingested == [1]
    assert len(fragments) == len(set(fragments)) == 2 * 4, fragments


def test_ingest_beside_an_fts_drop_stores_its_rows(tmp_path):
    """Was: ingest decided whether to index before its write transaction, so an `fts drop` in
    between failed the batch with `no such table: request_text_index` (a live ingest round logged
    a traceback; `logdb ingest` failed)."""
    write_jsonl(tmp_path / "logs" / "r.jsonl", [chat_record([{"role": "user", "content": "first"}], "x", ts=T0)])
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    [part] = store.existing()
    operator = make_store(tmp_path / "db")  # `logdb fts drop`, another process

    def drop_before_the_write_transaction(action, *_):
        if action == sqlite3.SQLITE_TRANSACTION and not dropped:
            dropped.append(fts.drop(operator))
        return sqlite3.SQLITE_OK

    dropped: list[dict] = []
    write_jsonl(tmp_path / "logs" / "r.jsonl", [chat_record([{"role": "user", "content": "second"}], "x", ts=T0)])
    with store.connected(part.path) as db:
        db.connection().set_authorizer(drop_before_the_write_transaction)
        try:
            report = ingest(store, tmp_path / "logs")
        finally:
            db.connection().set_authorizer(None)
    assert dropped == [{str(part.path): True}]
    assert report.rows_inserted == 1
    # The operator dropped the index of a partition holding rows: it stays dropped, never partial.
    assert search(store, "second").hits == []
    fts.build(store)
    assert len(search(store, "second").hits) == len(search(store, "first").hits) == 1


def test_new_rows_of_a_partition_without_its_index_are_not_indexed_alone(tmp_path):
    """Was: with FTS on, ingest gave a partition that held rows but no index (ingested with FTS off,
    or after `fts drop`) an index of the new rows only, and search then took that part for the whole
    day. A partition's index is whole or absent: `fts build` makes it whole."""
    write_jsonl(tmp_path / "old" / "r.jsonl", [chat_record([{"role": "user", "content": "older words"}], "x", ts=T0)])
    ingest(make_store(tmp_path / "db", fts_enabled=False), tmp_path / "old")
    store = make_store(tmp_path / "db")
    write_jsonl(tmp_path / "new" / "r.jsonl", [chat_record([{"role": "user", "content": "newer words"}], "x",
                                                           ts=T0 + timedelta(minutes=1))])
    assert ingest(store, tmp_path / "new").rows_inserted == 1
    assert search(store, "words").hits == []
    fts.build(store)
    assert len(search(store, "words").hits) == 2


def test_listing_newest_first_reads_only_the_partitions_it_needs(store):
    page = search(store, "", limit=2)
    assert page.partitions == 1 and len(page.hits) == 2  # the two newest rows are in the newest file
    assert page.hits[0].fields["ts"] >= page.hits[1].fields["ts"]
    assert search(store, "", limit=5).partitions == 2


def test_listing_is_newest_first_to_the_microsecond_and_pages_in_that_order(tmp_path):
    """ts is whole seconds: rows of one second are ordered by their µs timestamp, not by id."""
    records = [chat_record([{"role": "user", "content": f"q{i}"}], "a", ts=T0 + timedelta(microseconds=1000 * i),
                           request_id=f"id-{9 - i}") for i in range(6)]  # ids run against time
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    newest_first = [f"id-{9 - i}" for i in reversed(range(6))]
    assert [h.fields["request_id"] for h in search(store, "", limit=10).hits] == newest_first
    seen, cursor = [], ""
    while True:
        page = search(store, "", limit=4, cursor=cursor)
        seen += [h.fields["request_id"] for h in page.hits]
        if not (cursor := page.next_cursor):
            break
    assert seen == newest_first


def test_ranked_paging_survives_new_rows_between_pages(tmp_path):
    """A new row changes every bm25 score of its partition: pages are by position, so a live
    store (the gateway ingesting meanwhile) still pages through every hit."""
    log = tmp_path / "logs" / "r.jsonl"
    write_jsonl(log, [chat_record([{"role": "user", "content": f"quokka number {i}"}], "ok", ts=T0 + timedelta(seconds=i))
                      for i in range(23)])
    store = make_store(tmp_path / "db")
    ingest(store, log)
    first = search(store, "quokka", limit=5)
    write_jsonl(log, [chat_record([{"role": "user", "content": f"unrelated {i}"}], "fine", ts=T0 + timedelta(seconds=30 + i))
                      for i in range(40)])
    ingest(store, log)
    seen, cursor = [h.fields["request_id"] for h in first.hits], first.next_cursor
    while cursor:
        page = search(store, "quokka", limit=5, cursor=cursor)
        seen += [h.fields["request_id"] for h in page.hits]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 23


def test_page_size_is_checked(store):
    assert len(search(store, "", limit=0).hits) == 5  # 0 (a proto's unset field) means the default
    for bad in (-1, 501):
        with pytest.raises(InvalidQuery, match="limit must be between 1 and 500"):
            search(store, "", limit=bad)
    with pytest.raises(InvalidQuery, match="paged to the first 10,000"):
        search(store, "timeout", cursor=encode_cursor((20_000,)))


def test_a_forged_negative_ranked_cursor_is_invalid(store):
    with pytest.raises(InvalidQuery, match="invalid cursor"):
        search(store, "timeout", cursor=encode_cursor((-5,)))


@pytest.mark.parametrize(
    "filters",
    [SearchFilters(status_code=502), SearchFilters(api_key_hash="kh-k0"), SearchFilters(model="claude"),
     SearchFilters(provider="gemini"), SearchFilters(dialog_id="dlg-x"),
     SearchFilters(since=date(2025, 9, 10), to=date(2025, 9, 11)),
     SearchFilters(date(2025, 9, 10), date(2025, 9, 11), "claude", "openrouter", "kh-k0", 200, "dlg-x")],
)
@pytest.mark.parametrize("scale", [None, Rescale(2.0, (("retry", ("(retry AND error)",), 0.5), ("error", (), -0.1)))])
def test_a_filtered_text_search_looks_each_match_up_by_its_key(store, filters, scale):
    """The FTS match drives and each match's request is found by request_id. With an index on the
    filter column SQLite scanned every row with that status (or key) for each match: 60 s on 50k rows."""
    query = "timeout OR retry OR error"
    for sql, args in (ranked_sql(query, filters, scale, 20),
                      ordered_sql(query, filters, scale, 20, -1.0 if scale else math.inf, (-2.0, "r", 1) if scale else None)):
        with sqlite3.connect(store.existing()[0].path) as conn:
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
        assert any("VIRTUAL TABLE" in step for step in plan), plan
        looked_up = [step for step in plan if " r " in f"{step} "]
        assert looked_up and all("(request_id=?)" in step for step in looked_up), plan
        # (`requests` unaliased: the model filter's spellings, one index step per distinct model)
        assert not any("idx_requests_" in step for step in plan if not step.startswith("SEARCH requests ")), plan


def _day(tmp_path, name, day, texts, answer="ok"):
    """Records of one day, one per text; request ids `<name><i>`."""
    return [chat_record([{"role": "user", "content": text}], answer, ts=datetime(2025, 9, day, 10, tzinfo=UTC)
                        + timedelta(seconds=i), request_id=f"{name}{i:04d}") for i, text in enumerate(texts)]


def test_an_incident_day_ranks_its_on_topic_requests_first(tmp_path):
    """bm25 took IDF from each partition's own counts: "kubernetes" in every fragment of the incident
    day got FTS5's floor (1e-6) there, so the 5 requests about it ranked below 50 passing mentions on
    another day (scores -1.3e-6 vs -3.4). IDF now comes from every partition searched."""
    rnd = random.Random(3)
    words = "alpha beta gamma delta network database python rust golang docker paris london tokyo".split()
    busy = [[rnd.choice(words) for _ in range(30)] for _ in range(400)]
    for text in busy[:20]:
        text[rnd.randrange(30)] = "kubernetes"
    records = _day(tmp_path, "busy", 20, [" ".join(t) for t in busy])
    records += _day(tmp_path, "incident", 21, ["kubernetes pod crash kubernetes"] * 5, answer="kubernetes restarted")
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    for query in ("kubernetes", "kubernetes crash", "kubernetes OR pod", "kube*", '"kubernetes pod"'):
        ids = [h.fields["request_id"] for h in search(store, query, limit=10).hits]
        assert ids[:5] == [f"incident{i:04d}" for i in range(5)], (query, ids)



def test_a_query_of_many_words_searches_partitions_whose_statistics_differ(tmp_path):
    """Each word whose IDF differs between partitions was ranked by a join of its own: a query of 70
    such words (`w0 OR w1 OR …`, pasted text) was SQLite's "at most 64 tables in a join", 300 "too
    many FROM clause terms", an SQL error for the client (REST 500, gRPC INTERNAL, a traceback)."""
    words = [f"w{i}" for i in range(300)]
    records = _day(tmp_path, "one", 20, words)  # each word in one request
    records += _day(tmp_path, "all", 21, [" ".join(words[: i + 1]) for i in range(len(words))])
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    for query in (" OR ".join(words[:70]), " OR ".join(words), " OR ".join(f"({w} w0)" for w in words[:70])):
        page = search(store, query, limit=5)
        assert len(page.hits) == 5 and page.next_cursor, query[:40]

# Every fragment has the same length (role 1 token, content 6, endpoint 3, models 2 and 3), so the
# average fragment length is the same in every partition and in one table holding them all: there,
# the search's scores must be exactly the bm25 one FTS5 table computes.
_BATTERY = ["alpha", "zeta", "alpha beta", "alpha OR zeta", "alpha OR (beta gamma)", "alpha OR beta gamma",
            "alpha -beta", "alpha NOT (beta gamma)", "content:alpha role:user", "content:(alpha OR zeta)", '"alpha beta"',
            "alp*", "^alpha", "-role: alpha", "{role content}: assistant", "alpha OR beta NOT gamma",
            "(alpha OR beta) AND (gamma OR zeta)", "alpha OR (beta AND (gamma OR (delta paris)))", "alpha OR alpha",
            "role:user AND (paris OR london) -rust", "(alpha NOT beta) OR (gamma NOT delta)",
            "paris OR (london NOT (rust OR python))", "assistant OR content:(user paris)", 'alpha -"beta gamma"']


@pytest.fixture(scope="module")
def uniform_store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("uniform")
    rnd = random.Random(7)
    vocab = {10: "alpha alpha alpha alpha beta gamma delta paris tokyo rust golang user", 11: "beta gamma gamma delta"
             " epsilon paris london rust python zeta alpha", 12: "alpha beta gamma delta paris tokyo zeta python london"}
    records = []
    for day, count in ((10, 150), (11, 30), (12, 60)):
        words = vocab[day].split()
        texts = [" ".join(rnd.choice(words) for _ in range(6)) for _ in range(2 * count)]
        records += [chat_record([{"role": "user", "content": texts[2 * i]}], texts[2 * i + 1], model="m1",
                                mapped="openai/m-1", ts=datetime(2025, 9, day, 8, tzinfo=UTC) + timedelta(seconds=i),
                                request_id=f"d{day}-{i:03d}") for i in range(count)]
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    one_table = sqlite3.connect(":memory:")
    one_table.execute("CREATE VIRTUAL TABLE request_text_index USING fts5(request_id UNINDEXED, role, content, endpoint,"
                      " model_original, model_mapped, tokenize='unicode61')")
    for part in store.existing():
        with sqlite3.connect(part.path) as conn:
            one_table.executemany("INSERT INTO request_text_index VALUES (?, ?, ?, ?, ?, ?)",
                                  conn.execute("SELECT request_id, role, content, endpoint, model_original, model_mapped"
                                               " FROM request_text_index"))
    assert len({s for (s,) in one_table.execute("SELECT length(content) - length(replace(content, ' ', '')) FROM"
                                                 " request_text_index")}) == 1  # 6 words everywhere
    return store, one_table


@pytest.mark.parametrize("query", _BATTERY)
def test_scores_equal_those_of_one_table_holding_every_partition(uniform_store, query):
    store, one_table = uniform_store
    fts5 = to_fts5(query)
    best: dict[str, float] = {}
    for request_id, score in one_table.execute(
        "SELECT request_id, bm25(request_text_index) FROM request_text_index WHERE request_text_index MATCH ?", (fts5,)
    ):
        best[request_id] = min(score, best.get(request_id, 0.0))
    expected = sorted((score, request_id) for request_id, score in best.items())[:40]
    page = search(store, query, limit=40)
    # The same ranking; requests whose scores tie (to rounding: they are computed from other
    # partitions' statistics) may come in either order.
    assert len(page.hits) == len(expected)
    assert all(math.isclose(h.score, s, rel_tol=1e-9) for h, (s, _) in zip(page.hits, expected, strict=True))
    assert all(math.isclose(h.score, best[h.fields["request_id"]], rel_tol=1e-9) for h in page.hits)


def test_a_near_group_in_one_partition_scores_as_fts5_does(store):
    """A NEAR group is rescaled as a whole (docs/logstore.md): exact in one partition."""
    (part,) = store.existing(date(2025, 9, 11), date(2025, 9, 11))
    with sqlite3.connect(part.path) as conn:
        (expected,) = conn.execute("SELECT bm25(request_text_index) FROM request_text_index"
                                   " WHERE request_text_index MATCH 'NEAR(error timeout, 10)'").fetchone()
    (hit,) = search(store, "error NEAR/10 timeout", SearchFilters(since=date(2025, 9, 11), to=date(2025, 9, 11))).hits
    assert math.isclose(hit.score, expected, rel_tol=1e-12)


def test_a_query_the_parser_does_not_take_apart_is_ranked_per_partition(store):
    """A column filter inside another that leaves no column matches nothing in FTS5; the parser
    gives up on it, and the search ranks with each partition's statistics instead of failing."""
    assert search(store, "role:(content:timeout)").hits == []
    assert len(search(store, "timeout OR role:(content:timeout)").hits) == 2


CJK_TEXTS = [
    "我们今天讨论数据库的性能问题",  # Chinese: no spaces between words
    "データベースの性能を改善したいです",  # Japanese: katakana, hiragana and kanji
    "데이터베이스의 성능 문제를 논의합시다",  # Korean: particles attach to the word (데이터베이스+의)
    "用GPT模型优化Postgres数据库",  # CJK and Latin with no space between them
    "我想去北京旅游",
    "北京，天气",
    "rocket🚀launch",
    "Café naïve",
]


def _store_of(tmp_path, name, texts):
    """A store holding one day of records, one per text, request ids `<name><i>`."""
    write_jsonl(tmp_path / "logs" / "r.jsonl", _day(tmp_path, name, 10, texts))
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    return store


@pytest.fixture
def cjk_store(tmp_path):
    return _store_of(tmp_path, "t", CJK_TEXTS)


@pytest.mark.parametrize(("query", "expected"), [
    ("数据库", ["t0000", "t0003"]),  # inside a run of Chinese, and between Latin words
    ("北京", ["t0004", "t0005"]),
    ("我想*", ["t0004"]), ("我想去北京旅游", ["t0004"]),  # what unicode61 alone found still is
    ("データ", ["t0001"]), ("改善", ["t0001"]), ("性能", ["t0000", "t0001"]),
    ("데이터베이스", ["t0002"]), ("성능", ["t0002"]),
    ("GPT模型", ["t0003"]), ("content:GPT", ["t0003"]), ("Postgres 模型", ["t0003"]), ('"优化Postgres"', ["t0003"]),
    ("库的性", ["t0000"]), ("库性", []), ('"数据库 性能"', []),  # a run is matched where it occurs, in order
    ("NEAR(数据库 性能, 1)", ["t0000"]), ("NEAR(数据库 性能, 0)", []),  # NEAR counts CJK characters
    ("content:北京 -天气", ["t0004"]), ("^我们", ["t0000"]), ("^今天", []),
    ("🚀", []), ("rocket", ["t0006"]), ("launch", ["t0006"]), ("cafe naive", ["t0007"]),
])
def test_cjk_words_are_found_inside_runs_of_text(cjk_store, query, expected):
    """unicode61 alone made a CJK run one token, so `数据库` inside `我们今天讨论数据库的性能问题` found
    nothing; each CJK character is a token now, and a CJK run in a query is the phrase of them.
    Emoji still separate words and are never found."""
    assert sorted(h.fields["request_id"] for h in search(cjk_store, query).hits) == expected


def test_cjk_snippets_show_the_text_as_written(cjk_store):
    (hit,) = search(cjk_store, "数据库 讨论").hits
    assert hit.snippet == "我们今天[讨论][数据库]的性能问题"
    (hit,) = search(cjk_store, "GPT模型").hits
    assert hit.snippet == "用[GPT模型]优化Postgres数据库"


@pytest.mark.parametrize(("query", "message"), [
    ("数据库 AND", "invalid search query '数据库 AND': fts5: syntax error near \"\""),
    ("数据库 OR (性能", "invalid search query '数据库 OR (性能': fts5: syntax error near \"\""),
    ("北京 -(", "invalid search query '北京 -(' (as FTS5: '北京 NOT ('): fts5: syntax error near \"\""),
    ("ข้อมูล AND", "invalid search query 'ข้อมูล AND': fts5: syntax error near \"\""),
])
def test_a_bad_query_with_cjk_is_quoted_as_written(cjk_store, query, message):
    with pytest.raises(InvalidQuery) as err:
        search(cjk_store, query)
    assert str(err.value).startswith(message) and "\u200b" not in str(err.value)


UNSPACED_TEXTS = [
    "วันนี้เราคุยเรื่องฐานข้อมูลและประสิทธิภาพ",  # Thai: we talk about databases and performance today
    "เรากินข้าว",  # Thai: we eat rice (กิน)
    "ไปด้วยกัน",  # Thai: go together (กัน: the letters of กิน, another vowel sign)
    "ป่าไม้",  # Thai: forest (ป่า)
    "ป้าของฉัน",  # Thai: my aunt (ป้า: the letters of ป่า, another tone mark)
    "ພວກເຮົາເວົ້າກ່ຽວກັບຖານຂໍ້ມູນ",  # Lao: we talk about the database
    "យើងនិយាយអំពីមូលដ្ឋានទិន្នន័យ",  # Khmer: we talk about the database (ដ្ឋ: a subscript consonant)
    "ကျွန်ုပ်တို့ဒေတာဘေ့စ်အကြောင်းဆွေးနွေးကြသည်",  # Burmese: we discuss the database
    "ใช้Rustกับpostgresได้ดี",  # Thai and Latin with no space between them
]


@pytest.fixture
def unspaced_store(tmp_path):
    return _store_of(tmp_path, "u", UNSPACED_TEXTS)


@pytest.mark.parametrize(("query", "expected"), [
    ("ฐานข้อมูล", ["u0000"]), ("ข้อมูล", ["u0000"]), ("content:ประสิทธิภาพ", ["u0000"]), ("^วันนี้", ["u0000"]),
    ("ข้อ*", ["u0000"]), ('"ฐานข้อมูล"', ["u0000"]), ("^ข้อมูล", []), ("วันนี้ -ข้อมูล", []),
    ("NEAR(ฐานข้อมูล ประสิทธิภาพ, 3)", ["u0000"]), ("NEAR(ฐานข้อมูล ประสิทธิภาพ, 2)", []),  # และ: 3 characters
    ("กิน", ["u0001"]), ("กัน", ["u0002"]), ("ป่า", ["u0003"]), ("ป้า", ["u0004"]), ("ปา", []),  # marks are compared
    ("ที่", []),  # not the ท of ประสิทธิภาพ
    ("ຖານຂໍ້ມູນ", ["u0005"]), ("ເວົ້າ", ["u0005"]),
    ("ទិន្នន័យ", ["u0006"]), ("មូលដ្ឋាន", ["u0006"]), ("ដ្ឋាន", ["u0006"]),
    ("ဒေတာဘေ့စ်", ["u0007"]), ("ဆွေးနွေး", ["u0007"]),
    ("Rust", ["u0008"]), ("postgres ใช้", ["u0008"]), ('"กับpostgres"', ["u0008"]),
])
def test_thai_lao_khmer_and_burmese_words_are_found_inside_runs_of_text(unspaced_store, query, expected):
    """These scripts put no spaces between words either: each letter with its vowel signs, tone
    marks and viramas is a token, compared with them, and a run in a query is the phrase of them."""
    assert sorted(h.fields["request_id"] for h in search(unspaced_store, query).hits) == expected


def test_unspaced_snippets_keep_each_mark_on_its_letter(unspaced_store):
    (hit,) = search(unspaced_store, "ใช้ Rust").hits
    assert hit.snippet == "[ใช้][Rust]กับpostgresได้ดี"
    (hit,) = search(unspaced_store, "ประสิทธิ").hits  # a highlight that ends on a vowel sign
    assert hit.snippet == "วันนี้เราคุยเรื่องฐานข้อมูลและ[ประสิทธิ]ภาพ"


def test_latin_text_is_indexed_as_written(tmp_path):
    """Only the scripts written without spaces get separators: Latin text, accented or not, is the
    indexed copy as it was before them."""
    texts = ["Café naïve — déjà vu", "the database timeout", "Ünïcödé ß ﬁ"]
    store = _store_of(tmp_path, "l", texts)
    with sqlite3.connect(store.existing()[0].path) as conn:
        indexed = conn.execute("SELECT content FROM request_text_index WHERE role = 'user' ORDER BY rowid").fetchall()
    assert [content for (content,) in indexed] == texts



def test_a_snippet_of_text_holding_a_nul_keeps_the_text_around_it(tmp_path):
    """FTS5's snippets stop copying text at a NUL (JSON's \\u0000, which clients may send): the snippet
    of `nul\\0inside alpha \\0 tail beta` for `tail` was `nul[tail] beta`. The NUL is indexed as a space."""
    store = _store_of(tmp_path, "n", ["nul\x00inside alpha \x00 tail beta"])
    assert [h.snippet for h in search(store, "tail").hits] == ["nul inside alpha   [tail] beta"]
    assert [h.fields["request_id"] for h in search(store, "inside alpha").hits] == ["n0000"]

def test_images_are_stored_whole_but_never_indexed_as_text(tmp_path):
    """A generated image (message.images, OpenRouter's convention) or a sent one (an image_url part)
    is megabytes of base64: the row keeps it, the FTS index holds only the messages' text."""
    image = "data:image/png;base64," + base64.b64encode(random.Random(7).randbytes(3 * 1024 * 1024)).decode()
    sent = [{"role": "user", "content": [{"type": "text", "text": "paint a zebra"},
                                         {"type": "image_url", "image_url": {"url": image}}]}]
    record = chat_record(sent, "a striped zebra", ts=T0, provider="gemini")
    record["response"]["choices"][0]["message"]["images"] = [{"type": "image_url", "image_url": {"url": image}}]
    write_jsonl(tmp_path / "logs" / "r.jsonl", [record])
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    with sqlite3.connect(store.existing()[0].path) as conn:
        indexed = conn.execute("SELECT role, content FROM request_text_index").fetchall()
    assert sorted(indexed) == [("assistant", "a striped zebra"), ("user", "paint a zebra")]
    assert len(search(store, "zebra").hits) == 1
    stored = get_request(store, record["request_id"])
    answer, request = json.loads(stored["response_json"]), json.loads(stored["request_json"])
    assert answer["choices"][0]["message"]["images"][0]["image_url"]["url"] == image
    assert request["messages"][0]["content"][1]["image_url"]["url"] == image


def test_a_ranked_search_while_another_process_ingests_into_a_partition_it_counts(tmp_path, monkeypatch):
    """Live ingest committing between a search's read of a partition's fragment count and of its
    phrase counts made every fragment match more than the partition held: IDF of a negative ratio,
    a `math domain error` traceback (seen under load). The writer here is a real `logdb ingest`."""
    def otters(n: int, start: datetime) -> list[dict]:
        return [chat_record([{"role": "user", "content": f"otter {i}"}], "otter", ts=start + timedelta(minutes=i),
                            server_id="srv-local") for i in range(n)]

    write_jsonl(tmp_path / "logs" / "a.jsonl", otters(2, T0) + otters(2, T0 + timedelta(days=1)))
    assert finished(logdb(tmp_path, "ingest", "--from", "logs", LOGDB_SERVER_ID="srv-local"))[0] == 0
    write_jsonl(tmp_path / "later" / "b.jsonl", otters(10, T0 + timedelta(hours=1)))
    counted = search_module.phrase_counts
    writes = []

    def phrase_counts_after_a_write(db, phrases):
        if not writes:
            writes.append(finished(logdb(tmp_path, "ingest", "--from", "later", LOGDB_SERVER_ID="srv-local")))
        return counted(db, phrases)

    monkeypatch.setattr(search_module, "phrase_counts", phrase_counts_after_a_write)
    hits = search(make_store(tmp_path / "cli-db"), "otter", limit=50).hits
    assert writes[0][0] == 0, writes[0][2]
    assert len(hits) >= 4 and all("[otter]" in hit.snippet for hit in hits)


@pytest.fixture
def reordered_index(tmp_path):
    """A partition whose index holds request P's fragments after Q's (`fts build` adding the rows an
    earlier version left out), then R's: `fts rebuild` gives P's fragments R's rowids. Returns a
    function running a real `logdb fts rebuild` of it once, for a search to call between its reads."""
    def asked(i: int, text: str) -> dict:
        return chat_record([{"role": "user", "content": text}], "noted", ts=T0 + timedelta(minutes=i),
                           server_id="srv-local")

    write_jsonl(tmp_path / "logs" / "a.jsonl", [asked(0, "zebra crossing"), asked(1, "quiet street")])
    assert finished(logdb(tmp_path, "ingest", "--from", "logs", LOGDB_SERVER_ID="srv-local"))[0] == 0
    [part] = make_store(tmp_path / "cli-db").existing()
    with sqlite3.connect(part.path) as conn:
        [(first,)] = conn.execute("SELECT request_id FROM requests WHERE rowid = 1").fetchall()
        conn.execute("DELETE FROM request_text_index WHERE request_id = ?", (first,))
    assert finished(logdb(tmp_path, "fts", "build"))[0] == 0
    write_jsonl(tmp_path / "later" / "b.jsonl", [asked(2, "busy road")])
    assert finished(logdb(tmp_path, "ingest", "--from", "later", LOGDB_SERVER_ID="srv-local"))[0] == 0
    rebuilds = []

    def rebuild_once() -> None:
        if not rebuilds:
            rebuilds.append(finished(logdb(tmp_path, "fts", "rebuild")))
            assert rebuilds[0][0] == 0, rebuilds[0][2]

    rebuild_once.done = rebuilds
    return make_store(tmp_path / "cli-db"), rebuild_once


def test_a_rebuild_between_a_search_ranking_and_its_request_ids_changes_no_result(reordered_index, monkeypatch):
    """Was: a search read its best fragments' rowids and their request ids in separate snapshots, so
    an `fts rebuild` committing in between (new rowids) gave the result to another request (R's row
    for 'zebra', without a snippet). A partition's ranking now reads one snapshot."""
    store, rebuild_once = reordered_index
    looked_up = search_module._best_requests

    def best_requests_after_a_rebuild(db, rows, limit):
        rebuild_once()
        return looked_up(db, rows, limit)

    monkeypatch.setattr(search_module, "_best_requests", best_requests_after_a_rebuild)
    [hit] = search(store, "zebra").hits
    assert rebuild_once.done
    assert "[zebra] crossing" in hit.snippet and hit.fields["ts"] == int(T0.timestamp())


def test_a_rebuild_between_a_search_ranking_and_its_snippets_changes_no_snippet(reordered_index, monkeypatch):
    """Was: a winner's snippet was read by the fragment rowid the ranking found, so after an `fts
    rebuild` meanwhile it was another request's fragment (no snippet, or another request's text)."""
    store, rebuild_once = reordered_index
    shown_hit = search_module.ranked_hit

    def ranked_hit_after_a_rebuild(db, query, score, request_id, rowid):
        rebuild_once()
        return shown_hit(db, query, score, request_id, rowid)

    monkeypatch.setattr(search_module, "ranked_hit", ranked_hit_after_a_rebuild)
    [hit] = search(store, "zebra").hits
    assert rebuild_once.done
    assert "[zebra] crossing" in hit.snippet and hit.fields["ts"] == int(T0.timestamp())
