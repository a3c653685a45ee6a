"""A fragment matching a query thousands of times (a client's prompt of one word repeated, a long run of
Chinese: each character a word) gets its snippet in a time linear in the fragment, as the ranking
does: FTS5's snippet() took the square of its matches (0.5 s and 2 s here, 78 and 43 times an ordinary
search plus a highlight() of the fragment), in one C call that no stop interrupts."""

import sqlite3
import time
from datetime import UTC, datetime

import pytest

from aiproxy.logstore.fragments import MAX_FRAGMENT_CHARS
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.search import SNIPPET_TOKENS, UNSPACED_SNIPPET_TOKENS, search
from aiproxy.testing.logrecords import chat_record, make_store, write_jsonl

HOSTILE = {"x": "x " * (MAX_FRAGMENT_CHARS // 2), "数": "数" * MAX_FRAGMENT_CHARS}
# A search of such a fragment costs at most this many times an ordinary search plus FTS5's linear pass
# over the fragment's matches (measured: 2-4 with the fix, 43-78 before): a ratio on one machine.
MAX_RATIO = 10


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    ts = datetime(2025, 9, 10, 8, tzinfo=UTC)
    write_jsonl(tmp / "logs" / "r.jsonl", [chat_record([{"role": "user", "content": text}], "ok", ts=ts, request_id=word)
                                           for word, text in HOSTILE.items()])
    store = make_store(tmp / "db")
    ingest(store, tmp / "logs")
    return store


def _fastest(run, times: int = 3) -> float:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        took.append(time.perf_counter() - started)
    return min(took)


@pytest.mark.parametrize(("word", "size", "between"), [("x", SNIPPET_TOKENS, " "), ("数", UNSPACED_SNIPPET_TOKENS, "")])
def test_a_fragment_matching_thousands_of_times_gets_its_snippet_in_linear_time(hostile_store, word, size, between):
    [hit] = search(hostile_store, word).hits
    assert hit.fields["request_id"] == word
    assert hit.snippet == between.join([f"[{word}]"] * size) + "…"  # the documented window, as FTS5 wrote it
    with sqlite3.connect(hostile_store.existing()[0].path) as conn:
        linear = _fastest(lambda: conn.execute(
            "SELECT highlight(request_text_index, 2, '[', ']') FROM request_text_index"
            " WHERE request_text_index MATCH ?", (word,)).fetchall())
    conn.close()
    linear += _fastest(lambda: search(hostile_store, "ok"))  # the answers: a search of two short fragments
    took = _fastest(lambda: search(hostile_store, word))
    assert took < MAX_RATIO * linear, f"{took:.3f} s, {took / linear:.1f} times the linear cost ({linear:.3f} s)"
