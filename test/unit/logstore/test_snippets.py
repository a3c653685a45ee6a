"""The snippets built from highlight() for fragments with many matches are FTS5's snippet() ones: checked
on seeded random fragments with few, where both can be computed."""

import random
import sqlite3

import pytest

from aiproxy.logstore import snippets
from aiproxy.logstore.database import FTS_TABLE
from aiproxy.logstore.models import FTS_COLUMNS
from aiproxy.logstore.unspaced import split_unspaced

WORDS = ("alpha", "Alpha", "ALPHA", "beta", "Béta", "gamma", "x", "café", "cafe\u0301", "数", "据", "ใช้", "C++", "gpt-4")
SEPARATORS = (" ", " ", " ", "  ", ". ", ": ", ".\n", ":\t", ", ", "\n", "-", ".", "_", "\x00")
QUERIES = ("alpha", "x", "beta OR x", "gamma OR beta OR alpha", '"alpha beta"', "alpha AND beta", "NEAR(alpha beta, 3)",
           "al*", "cafe", "数据", "数 OR 据", "ใช้", '"gpt-4"', "content:beta OR role:user")


class _Db:
    """peewee's execute_sql over a plain connection."""

    def __init__(self, conn):
        self.execute_sql = conn.execute


@pytest.fixture
def db():
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5({', '.join(FTS_COLUMNS)})")
    yield _Db(conn)
    conn.close()


def test_built_snippets_are_fts5s_snippets(db, monkeypatch):
    monkeypatch.setattr(snippets, "MAX_SNIPPET_MATCHES", -1)  # build every snippet
    rng = random.Random(20261128)
    for case in range(600):
        words = rng.choice((3, 10, 20, 40, 100, 300))
        text = rng.choice(("", *SEPARATORS)) + "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(words))
        query, size = split_unspaced(rng.choice(QUERIES)), rng.choice((4, 16, 32))
        rowid = db.execute_sql(f"INSERT INTO {FTS_TABLE} (request_id, role, content) VALUES ('r', 'user', ?)",
                               (split_unspaced(text.replace("\x00", " ")),)).lastrowid
        expected = db.execute_sql(f"SELECT snippet({FTS_TABLE}, 2, '[', ']', '…', ?) FROM {FTS_TABLE}"
                                  f" WHERE {FTS_TABLE} MATCH ? AND rowid = ?", (size, query, rowid)).fetchone()
        if expected is not None:
            assert snippets.snippet(db, query, size, "rowid = ?", (rowid,)) == expected[0], f"case {case}: {query!r} in {text!r}"
