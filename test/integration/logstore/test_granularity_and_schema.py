"""Seed §11.10 (weekly partitions broke commands), monthly files, and migrating seed files."""

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from aiproxy.logstore import dialogs, fts
from aiproxy.logstore.database import SCHEMA_VERSION
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.queries import stats
from aiproxy.logstore.search import search
from aiproxy.testing.logrecords import conversation, make_store, write_jsonl

T0 = datetime(2025, 9, 5, 12, 0, tzinfo=UTC)  # a Friday: the conversation crosses into the next ISO week

SEED_DDL = """
CREATE TABLE servers (server_id TEXT PRIMARY KEY, hostname TEXT, env TEXT, first_seen_ts INTEGER);
CREATE TABLE requests (request_id TEXT PRIMARY KEY, server_id TEXT NOT NULL, ts INTEGER NOT NULL, endpoint TEXT NOT NULL,
  model_original TEXT, model_mapped TEXT, status_code INTEGER, latency_ms REAL, api_key_hash TEXT,
  request_json TEXT NOT NULL, response_json TEXT NOT NULL, dialog_id TEXT);
CREATE TABLE ingest_sources (source_path TEXT PRIMARY KEY, sha256 TEXT, bytes_ingested INTEGER, mtime INTEGER, last_scan_ts INTEGER);
CREATE INDEX idx_requests_ts ON requests(ts);
INSERT INTO requests VALUES ('seed-row', 'srv', 1757505600, '/v1/chat/completions', 'gpt-4', 'openai/gpt-4', 200, 1.5, '123',
  '{"messages": [{"content": "old seed prompt", "role": "user"}], "model": "openai/gpt-4"}', '{"model": "openai/gpt-4"}', NULL);
"""


@pytest.mark.parametrize("granularity", ["weekly", "monthly"])
def test_every_command_works_on_weekly_and_monthly_partitions(tmp_path, granularity):
    records = conversation([(f"turn {i} about sailing", f"answer {i}") for i in range(5)], start=T0, gap_s=86400)
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db", partition_granularity=granularity)
    assert ingest(store, tmp_path / "logs").rows_inserted == 5
    names = sorted(p.path.name for p in store.existing())
    assert names == (["ai_proxy_2025W36.sqlite3", "ai_proxy_2025W37.sqlite3"] if granularity == "weekly" else ["ai_proxy_202509.sqlite3"])
    assert len(search(store, "sailing").hits) == 5
    assert stats(store)["dialogs"] == 1
    assert all(fts.drop(store).values())  # the seed's fts drop silently skipped weekly files
    assert search(store, "sailing").hits == []
    fts.build(store)
    assert len(search(store, "sailing").hits) == 5
    assert sum(dialogs.clear(store).values()) == 5
    dialogs.assign(store)
    assert stats(store)["dialogs"] == 1


def test_a_file_written_by_the_seed_is_migrated_in_place(tmp_path):
    path = tmp_path / "db" / "2025" / "09" / "ai_proxy_20250910.sqlite3"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(SEED_DDL)
    store = make_store(tmp_path / "db")
    fts.build(store)
    hit = search(store, "seed").hits[0]
    assert hit.fields["request_id"] == "seed-row" and hit.fields["provider"] is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
    assert {"provider", "transport", "stream", "ttft_ms", "total_tokens", "finish_reason", "error"} <= columns
    write_jsonl(tmp_path / "logs" / "r.jsonl", conversation([("new", "row")], start=datetime(2025, 9, 10, 13, tzinfo=UTC)))
    assert ingest(store, tmp_path / "logs").rows_inserted == 1  # new rows land next to the seed's


def test_pragmas_on_every_connection(tmp_path):
    store = make_store(tmp_path / "db")
    write_jsonl(tmp_path / "logs" / "r.jsonl", conversation([("a", "b")], start=T0))
    ingest(store, tmp_path / "logs")
    db = store.database(store.existing()[0].path)
    values = {p: db.execute_sql(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous", "busy_timeout")}
    assert values == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000}
    assert (tmp_path / "db" / "control.sqlite3").is_file()
    assert (store.settings.base / ".server_id").exists() is False  # LOGDB_SERVER_ID given: no file needed


def test_server_id_file_is_created_once_and_reused(tmp_path):
    from aiproxy.logstore.server_identity import resolve_server_id
    from aiproxy.logstore.settings import LogStoreSettings

    settings = LogStoreSettings.from_mapping({"dir": str(tmp_path / "db")}, {})
    first = resolve_server_id(settings)
    assert (tmp_path / "db" / ".server_id").read_text().strip() == first == resolve_server_id(settings)


def test_seed_readme_search_example_runs_after_days_of_data(tmp_path):
    records = conversation([("machine learning", "AI"), ("error then timeout", "retry")], start=T0, gap_s=3 * 86400)
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    store = make_store(tmp_path / "db")
    ingest(store, tmp_path / "logs")
    assert len(search(store, "machine learning OR AI").hits) == 2
    assert len(search(store, "error NEAR/5 timeout").hits) == 1


def test_a_conversation_in_a_seed_file_is_threaded_by_content_after_migration(tmp_path):
    """The seed's rows got the thread columns as NULL, so `dialogs assign` split its conversations
    by the window rule (a 2 h pause: two dialogs) where docs/logstore.md threads by content."""
    path = tmp_path / "db" / "2025" / "09" / "ai_proxy_20250910.sqlite3"
    path.parent.mkdir(parents=True)
    first = [{"role": "user", "content": "tell me about otters"}]
    answer = {"role": "assistant", "content": "otters hold hands"}
    second = [*first, answer, {"role": "user", "content": "and beavers?"}]
    with sqlite3.connect(path) as conn:
        conn.executescript(SEED_DDL.split("INSERT INTO")[0])
        for n, (messages, text) in enumerate([(first, answer["content"]), (second, "beavers build dams")]):
            request = {"messages": messages, "model": "openai/gpt-4", "stream": False}
            response = {"choices": [{"index": 0, "message": {"content": text, "role": "assistant"}}], "model": "openai/gpt-4"}
            conn.execute("INSERT INTO requests VALUES (?, 'srv', ?, '/v1/chat/completions', 'openai/gpt-4', 'openai/gpt-4',"
                         " 200, 1.0, '-1', ?, ?, NULL)",
                         (f"seed-{n}", 1757505600 + n * 7200, json.dumps(request, sort_keys=True),
                          json.dumps(response, sort_keys=True)))
    store = make_store(tmp_path / "db")
    dialogs.assign(store)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT request_id, dialog_id, dialog_parent_id FROM requests ORDER BY ts").fetchall()
    assert rows[0][1] == rows[1][1] and rows[1][2] == "seed-0"
