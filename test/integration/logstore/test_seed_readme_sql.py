"""The SQL examples of the seed README, unchanged, in the sqlite3 shell, on a partition written here."""

import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime

import pytest

from aiproxy.logstore.ingest import ingest
from aiproxy.testing.logrecords import conversation, make_store, write_jsonl

# Copied verbatim from the seed README ("Search Examples").
README_SQL = [
    "SELECT * FROM request_text_index WHERE request_text_index MATCH 'machine learning OR AI';",
    """SELECT r.* FROM requests r
JOIN request_text_index fts ON r.request_id = fts.request_id
WHERE fts.model_original LIKE '%gpt-4%';""",
    """SELECT dialog_id, COUNT(*) as message_count,
       MIN(ts) as start_time, MAX(ts) as end_time
FROM requests
WHERE dialog_id IS NOT NULL
GROUP BY dialog_id
ORDER BY start_time DESC;""",
]
# The README's proximity example uses FTS3/4 syntax that FTS5 (the seed's table type too)
# rejects; `logdb search` and the APIs accept it. The shell runs the FTS5 spelling.
README_NEAR = "SELECT * FROM request_text_index WHERE request_text_index MATCH 'error NEAR/5 timeout';"
FTS5_NEAR = "SELECT * FROM request_text_index WHERE request_text_index MATCH 'NEAR(error timeout, 5)';"


@pytest.fixture
def partition(tmp_path):
    turns = [("tell me about machine learning", "AI is broad"), ("an error then a timeout", "retry it")]
    write_jsonl(tmp_path / "logs" / "r.jsonl", conversation(turns, start=datetime(2025, 9, 10, 9, tzinfo=UTC), gap_s=60))
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    store.close()
    return store.existing()[0].path


def _run(path, sql: str) -> str:
    shell = shutil.which("sqlite3")
    if shell is None:  # CI installs the shell (.ci/run); without it, the same SQL text via Python
        with sqlite3.connect(path) as conn:
            return "\n".join("|".join(map(str, row)) for row in conn.execute(sql))
    done = subprocess.run([shell, "-bail", str(path), sql], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


@pytest.mark.parametrize("sql", README_SQL)
def test_readme_examples_run_unchanged(partition, sql):
    assert _run(partition, sql).strip()


def test_readme_proximity_search(partition):
    assert "timeout" in _run(partition, FTS5_NEAR)
    with pytest.raises((AssertionError, sqlite3.OperationalError)):
        _run(partition, README_NEAR)
