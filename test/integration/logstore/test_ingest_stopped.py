"""`logdb ingest` stopped half-way by SIGTERM (kill, systemd, docker stop, timeout): one line, exit
143, the workers stop at their next record instead of reading their files to the end, the store is
consistent (SQLite transactions, checkpoints only past stored rows) and the same command again
ingests the rest. Before, SIGTERM killed it on the spot (-15, no line), and a stop that raised in
the main thread (Ctrl-C) still waited for every running worker to finish its whole file.

Half-way is certain, not timed: the second day's partition is held under an exclusive lock, so both
workers wait for it with the first day stored and most of their files unread
(aiproxy.testing.logdb_processes)."""

import json
import signal
import sqlite3
from datetime import UTC, date, datetime, timedelta

from aiproxy.logstore.partitions import partition_path
from aiproxy.testing.logdb_processes import finished, interrupt, locked, logdb, stopped_line
from aiproxy.testing.logrecords import chat_record, write_jsonl

DAY_1, DAY_2 = datetime(2025, 9, 10, tzinfo=UTC), datetime(2025, 9, 11, tzinfo=UTC)
PER_FILE = {DAY_1: 300, DAY_2: 3000}
# Two workers, one per file; rows reach SQLite a hundred at a time, so each waits at the lock early.
ENV = {"LOGDB_IMPORT_PARALLELISM": "2", "LOGDB_BATCH_ROWS": "100", "LOGDB_SERVER_ID": "srv-cli"}


def write_logs(tmp_path) -> int:
    for name in ("a", "b"):
        records = [chat_record([{"role": "user", "content": f"{name} question {day:%d} {i}"}], "answer",
                               ts=day + timedelta(seconds=i), request_id=f"{name}-{day:%d}-{i}")
                   for day, count in PER_FILE.items() for i in range(count)]
        write_jsonl(tmp_path / "logs" / "requests" / f"requests-{name}.jsonl", records)
    return 2 * sum(PER_FILE.values())


def stored_rows(base) -> int:
    total = 0
    for path in sorted(base.rglob("ai_proxy_*.sqlite3")):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            total += conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    return total


def test_sigterm_mid_ingest_stops_the_workers_and_a_rerun_ingests_the_rest(tmp_path):
    expected = write_logs(tmp_path)
    assert finished(logdb(tmp_path, "init", "--date", "2025-09-11", **ENV))[0] == 0
    held = partition_path(tmp_path / "cli-db", date(2025, 9, 11))
    with locked(held):
        ingesting = logdb(tmp_path, "ingest", "--from", "logs", **ENV)
        interrupt(ingesting, signal.SIGTERM, held)
    assert finished(ingesting) == (143, "", stopped_line(signal.SIGTERM))
    stored = stored_rows(tmp_path / "cli-db")
    assert stored < expected  # the workers stopped mid-file, rather than reading on to the end
    code, out, err = finished(logdb(tmp_path, "stats", "--json", **ENV))
    assert (code, err) == (0, "") and json.loads(out)
    code, out, err = finished(logdb(tmp_path, "ingest", "--from", "logs", "--json", **ENV))
    assert (code, err) == (0, "")
    assert json.loads(out.splitlines()[-1])["rows_inserted"] == expected - stored
    assert stored_rows(tmp_path / "cli-db") == expected
