"""A partition another process keeps write-locked beyond the busy timeout, as a long `logdb fts
rebuild` does for its whole run: `logdb` says so in one line naming the file (exit 1), the gateway's
live ingest logs one warning per round and goes on at its interval once the lock goes. The lock is
held by this test's own connection (BEGIN IMMEDIATE on the WAL file), so the wait is certain."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from aiproxy.logstore.partitions import partition_path
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.logdb_processes import finished, logdb
from aiproxy.testing.logrecords import chat_record, write_jsonl

T0 = datetime(2025, 9, 10, 9, 0, tzinfo=UTC)


@contextlib.contextmanager
def write_locked(database: Path):
    """Hold the write lock of a WAL database, as another process's long transaction does."""
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.close()


def records(tag: str, n: int) -> list[dict]:
    return [chat_record([{"role": "user", "content": f"{tag} question {i}"}], "answer", ts=T0 + timedelta(seconds=i))
            for i in range(n)]


@pytest.mark.parametrize("command", [("ingest", "--from", "logs"), ("fts", "build"), ("fts", "rebuild"),
                                     ("dialogs", "clear")])
def test_a_command_meeting_a_partition_locked_too_long_says_so_in_one_line(tmp_path, command):
    write_jsonl(tmp_path / "logs" / "requests" / "a.jsonl", records("first", 5))
    assert finished(logdb(tmp_path, "ingest", "--from", "logs"))[0] == 0
    write_jsonl(tmp_path / "logs" / "requests" / "b.jsonl", records("second", 5))
    partition = partition_path(tmp_path / "cli-db", T0.date(), "daily")
    with write_locked(partition):
        code, out, err = finished(logdb(tmp_path, *command, LOGDB_BUSY_TIMEOUT_MS="200"))
    assert code == 1, err
    assert err == (f"logdb: {partition} stayed locked by another process's write (a long `logdb fts rebuild`, `merge`"
                   " or `bundle import`) for longer than LOGDB_BUSY_TIMEOUT_MS; nothing is damaged and what this command"
                   " committed stays: run it again once that write is done, or raise LOGDB_BUSY_TIMEOUT_MS\n")
    code, out, err = finished(logdb(tmp_path, *command, "--json"))  # the lock is gone: the same command works
    assert code == 0, err
    if command[0] == "ingest":
        assert json.loads(out)["rows_inserted"] == 5


def test_live_ingest_waits_out_a_lock_without_a_traceback_and_without_backing_off(tmp_path):
    env = {"LOGDB_ENABLED": "true", "LOGDB_SERVER_ID": "srv-busy", "LOGDB_BUSY_TIMEOUT_MS": "100",
           "LOGDB_LIVE_INTERVAL_S": "0.1"}
    with GatewayProcess(tmp_path, env=env) as gateway, httpx.Client(
        base_url=gateway.base_url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30
    ) as client:
        def chat(text: str) -> str:
            reply = client.post("/chat/completions", json={"model": "mock", "messages": [{"role": "user", "content": text}]})
            assert reply.status_code == 200, reply.text
            return reply.headers["x-request-id"]

        def stored(request_id: str) -> bool:
            return any(_holds(path, request_id) for path in (gateway.log_dir / "db").rglob("ai_proxy_*.sqlite3"))

        first = chat("before the lock")
        wait_for(lambda: stored(first), 20)
        partition = next((gateway.log_dir / "db").rglob("ai_proxy_*.sqlite3"))
        app_log = gateway.log_dir / "app.log"
        with write_locked(partition):
            second = chat("during the lock")
            # Eight rounds that met the lock: backing off (doubling from 0.1 s) would now pause 25 s.
            wait_for(lambda: app_log.read_text().count(f"{partition.name} stayed locked") >= 8, 30)
        wait_for(lambda: stored(second), 5)
    text = app_log.read_text()
    assert "Traceback" not in text and "live ingest failed" not in text


def _holds(partition, request_id: str) -> bool:
    """Whether `partition` has stored the request; a partition the gateway has just created may not
    have its tables yet (read-only: this look never creates or changes a file)."""
    conn = sqlite3.connect(f"file:{partition}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM requests WHERE request_id = ?", (request_id,)).fetchone() is not None
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise
    finally:
        conn.close()


def wait_for(predicate, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)
