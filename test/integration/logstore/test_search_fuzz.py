"""Seeded random queries (aiproxy.testing.search_queries) against a real store holding hostile text:
each query is results or InvalidQuery, never another error; results are what one FTS5 table holding
every fragment finds, the same twice, paged without duplicates or gaps; snippets are text as written.
A failure names the seed and the case; the CLI and the gateway's gRPC and REST get a bounded share."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import sqlite3
import unicodedata
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest

from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.fts_query import to_fts5
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.models import FTS_COLUMNS
from aiproxy.logstore.search import search
from aiproxy.logstore.unspaced import FIRST_STAND_IN, SEPARATOR, shown
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.gateway import ADMIN_KEY, GatewayProcess
from aiproxy.testing.logdb_processes import finished, logdb
from aiproxy.testing.logrecords import chat_record, make_store, write_jsonl
from aiproxy.testing.search_queries import QueryGenerator
from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

SEEDS = fuzz_seeds(20261127, 1)
CASES = 200  # queries per seed

# Text a client may send: FTS5 syntax, NUL, a huge word, plane-16 private use (the stand-ins unspaced.py
# writes for marks), zero-width characters, brackets like the snippet's highlight, scripts split or not.
TEXTS = (
    "alpha beta timeout retry", "gpt-4 what's file.py C++ alpha", "café naïve Paris, France",
    "我们讨论数据库的性能问题 alpha", "データベースの性能を改善", "데이터베이스의 성능", "วันนี้เราคุยเรื่องฐานข้อมูล ป่า ป้า",
    "ຖານຂໍ້ມູນ ទិន្នន័យ ဒေတာဘေ့စ်", 'NEAR(alpha beta, 3) "quoted" AND OR NOT content:x {role}: ^* -(x) near/2',
    "nul\x00inside alpha \x00", "\U00100e34\U00100e48 stand-ins beta ก\U00100e34 x\U00100e34y", "data\u200bbase alpha",
    "huge " + "w" * 19_990, "[bracketed] alpha ] [", "שלום مرحبا ΑΛΦΑ alpha", "🚀rocket👩\u200d💻 e\u0301 \ufffd \ue000",
    "\x1b[31mred\x1b[0m timeout \u202eevil", "x " * 200 + "alpha",
)


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    """TEXTS as questions and answers over three days (three partitions: IDF is rescaled)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    t0 = datetime(2025, 9, 10, 8, tzinfo=UTC)
    records = [
        chat_record([{"role": "user", "content": text}], TEXTS[(i + 5) % len(TEXTS)], ts=t0 + timedelta(days=i % 3, minutes=i),
                    request_id=f"r{i:03d}", model=("gpt-4o", "claude", "数据模型")[i % 3])
        for i, text in enumerate(TEXTS * 2)
    ]
    write_jsonl(tmp / "logs" / "r.jsonl", records)
    store = make_store(tmp / "db")
    ingest(store, tmp / "logs")
    return store


@pytest.fixture(scope="module")
def one_table(fuzz_store):
    """Every partition's fragments in one in-memory FTS5 table: what a query should find."""
    table = sqlite3.connect(":memory:")
    columns = ", ".join(FTS_COLUMNS)
    table.execute(f"CREATE VIRTUAL TABLE t USING fts5({columns.replace('request_id', 'request_id UNINDEXED')})")
    for part in fuzz_store.existing(None, None):
        with sqlite3.connect(part.path) as conn:
            rows = conn.execute(f"SELECT {columns} FROM request_text_index").fetchall()
        conn.close()
        table.executemany(f"INSERT INTO t ({columns}) VALUES ({', '.join('?' * len(FTS_COLUMNS))})", rows)
    yield table
    table.close()


def _found(table, query: str) -> set[str]:
    return {row[0] for row in table.execute("SELECT request_id FROM t WHERE t MATCH ?", (to_fts5(query.strip()),))}


@contextlib.contextmanager
def _case(seed: int, case: int, query: str):
    try:
        yield
    except Exception as exc:
        raise AssertionError(f"{seed_label(seed)} case {case}: query {query!r}: {exc!r}") from exc


def _check_snippet(snippet: str) -> None:
    snippet.encode()  # valid text: no lone surrogate
    assert snippet == shown(snippet) and SEPARATOR not in snippet  # no separator or stand-in left


def _folded(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(ch))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_queries_are_results_or_invalid_query_and_results_are_consistent(fuzz_store, one_table, seed):
    queries = QueryGenerator(seed).queries(CASES)
    paged = random.Random(seed)
    for case, query in enumerate(queries):
        with _case(seed, case, query):
            try:
                page = search(fuzz_store, query, limit=500)
            except InvalidQuery as exc:
                assert exc.message.startswith("invalid") and "\n" not in exc.message
                continue
            ids = [hit.fields["request_id"] for hit in page.hits]
            assert len(ids) == len(set(ids)), "a request twice"
            if not query.strip():
                continue  # a listing, newest first
            assert set(ids) == _found(one_table, query)
            assert [h.fields["request_id"] for h in search(fuzz_store, query, limit=500).hits] == ids, "another order"
            for hit in page.hits:
                _check_snippet(hit.snippet)
            if len(ids) > 1 and paged.random() < 0.3:
                size, cursor, pages = paged.randint(1, 4), "", []
                while True:
                    more = search(fuzz_store, query, limit=size, cursor=cursor)
                    pages += [h.fields["request_id"] for h in more.hits]
                    if not (cursor := more.next_cursor):
                        break
                assert pages == ids, "pages differ from one page"


@pytest.mark.parametrize("word", ["alpha", "timeout", "cafe", "PARIS", "数据库", "ฐานข้อมูล", "stand", "bracketed", "evil"])
def test_a_word_query_finds_the_texts_holding_it_with_the_word_highlighted(fuzz_store, one_table, word):
    hits = search(fuzz_store, f"content:{word}", limit=500).hits
    assert {h.fields["request_id"] for h in hits} == _found(one_table, f"content:{word}") != set()
    for hit in hits:
        _check_snippet(hit.snippet)
        marked = [_folded(part.split("]", 1)[0]) for part in hit.snippet.split("[")[1:]]
        assert _folded(word) in "".join(marked), hit.snippet


def test_hostile_indexed_text_shows_as_written_in_snippets(fuzz_store):
    """FTS5 syntax, brackets and a zero-width space in the text come back as written (the space was
    invisible anyway), a NUL as a space; private-use characters of plane 16 come back as the marks they stand in for,
    as docs/logstore.md says, and match only as written: `กิ` does not find `ก` + U+100E34."""
    def snippets(query):
        return {h.snippet for h in search(fuzz_store, query, limit=500).hits}

    assert snippets("inside") == {"nul [inside] alpha  "}  # was "nul[inside] alpha ": FTS5's snippet stops at a NUL
    assert snippets("quoted") == {'NEAR(alpha beta, 3) "[quoted]" AND OR NOT content:x {role}: ^* -(x) near/2'}
    assert snippets("bracketed") == {"[[bracketed]] alpha ] ["}  # the text's brackets beside the highlight's
    assert snippets("base") == {"data[base] alpha"}
    assert snippets("stand") == {"\u0e34\u0e48 [stand]-ins beta กิ x\u0e34y"}
    assert search(fuzz_store, "กิ").hits == []
    stand_in = search(fuzz_store, f"x{FIRST_STAND_IN}y").hits
    assert stand_in == [] or all("x" in h.snippet for h in stand_in)


SURFACE_SEEDS = fuzz_seeds(20261128, 1)
CLI_CASES, GATEWAY_CASES = 6, 30


def _surface_queries(seed: int, n: int, *, command_line: bool) -> list[str]:
    """Random queries for a surface: lone surrogates (bytes that are not UTF-8) only on a command line,
    which cannot carry a NUL; over HTTP and gRPC a NUL and no surrogate."""
    queries = QueryGenerator(seed, surrogates=command_line).queries(n)
    return [q.replace("\x00", "") if command_line else q for q in queries]


@pytest.mark.parametrize("seed", SURFACE_SEEDS)
def test_random_queries_through_logdb_and_the_gateway_are_answers_or_invalid_query(fuzz_store, tmp_path, seed):
    """One line and exit 2 from logdb, INVALID_ARGUMENT from gRPC, an OpenAI error body 400 from REST:
    never a traceback, INTERNAL or 500."""
    store_dir = fuzz_store.settings.base
    runs = {q: logdb(tmp_path, "search", "--out", str(store_dir), "--json", "--limit", "5", "--", q)
            for q in [*_surface_queries(seed, CLI_CASES, command_line=True), "alpha caf\udce9"]}  # and a Latin-1 é
    for case, (query, process) in enumerate(runs.items()):
        code, out, err = finished(process)
        with _case(seed, case, query):
            assert code in (0, 2) and "Traceback" not in err, err
            if code == 0:
                assert isinstance(json.loads(out)["results"], list)
            else:
                assert len(err.splitlines()) == 1 or "usage:" in err, err
                assert err.splitlines()[-1].startswith("logdb"), err

    shutil.copytree(store_dir, tmp_path / "gw" / "logs" / "db")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with GatewayProcess(tmp_path / "gw", env={"LOGDB_ENABLED": "true"}) as gateway, \
            grpc.insecure_channel(gateway.grpc_target) as channel, httpx.Client(timeout=60) as client:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        for case, query in enumerate(_surface_queries(seed, GATEWAY_CASES, command_line=False)):
            with _case(seed, case, query):
                try:
                    stub.SearchRequests(logs_pb2.SearchRequestsRequest(q=query, limit=5),
                                        metadata=(("authorization", admin["Authorization"]),), timeout=60)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.details(), exc
                answer = client.get(f"{gateway.root_url}/v1/logs/requests", params={"q": query, "limit": 5},
                                    headers=admin)
                if answer.status_code != 200:
                    error = answer.json()["error"]
                    assert answer.status_code == 400 and error["code"] == "invalid_query" and error["message"]
