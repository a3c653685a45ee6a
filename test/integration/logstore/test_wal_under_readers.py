"""A partition searched without pause while a real `logdb ingest` writes it keeps its -wal near its
usual size. Before, SQLite's automatic (PASSIVE) checkpoints could never start the -wal over while some
reader was in it, and it grew by every row ingested: in a soak of the gateway with a search loop the
day's -wal reached 156 MB beside a 99 MB file; here it reached the size of everything ingested."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiproxy.logstore.partitions import partition_path
from aiproxy.logstore.wal_limit import LIMIT_CHECKPOINTS
from aiproxy.testing.logdb_processes import finished, logdb
from aiproxy.testing.logrecords import chat_record, write_jsonl

T0 = datetime(2025, 9, 10, 1, tzinfo=UTC)
ROWS = 5000  # ~35 MB of rows and index
AUTOCHECKPOINT_PAGES = 250
WAL_LIMIT = LIMIT_CHECKPOINTS * AUTOCHECKPOINT_PAGES * 4096  # 4 MB
SETTINGS = {"LOGDB_WAL_AUTOCHECKPOINT_PAGES": str(AUTOCHECKPOINT_PAGES), "LOGDB_BATCH_KB": "256",
            "LOGDB_BUSY_TIMEOUT_MS": "5000"}

# Searches the store until killed; says "ready" once it has searched. An error ends it (the test sees it).
READER = """
import sys
from aiproxy.logstore.search import search
from aiproxy.testing.logrecords import make_store
store = make_store(sys.argv[1])
search(store, "walrus")
print("ready", flush=True)
while True:
    for query in ("walrus", "lorem", ""):
        search(store, query, limit=50)
"""


def records(first: int, n: int) -> list[dict]:
    return [chat_record([{"role": "user", "content": f"walrus {i} " + "lorem ipsum dolor sit amet " * 40}],
                        f"answer {i} " * 40, ts=T0 + timedelta(seconds=i / 2)) for i in range(first, first + n)]


def wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_wal_stays_bounded_while_searches_never_stop(tmp_path):
    write_jsonl(tmp_path / "first.jsonl", records(0, 10))
    assert finished(logdb(tmp_path, "ingest", "--from", "first.jsonl", **SETTINGS))[0] == 0
    partition = partition_path(tmp_path / "cli-db", T0.date(), "daily")
    write_jsonl(tmp_path / "rest.jsonl", records(10, ROWS))
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "cli-db")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for reader in readers:
            assert reader.stdout.readline() == "ready\n", reader.communicate()[1]
        ingesting = logdb(tmp_path, "ingest", "--from", "rest.jsonl", "--json", **SETTINGS)
        largest = 0
        while ingesting.poll() is None:  # sampled: the -wal is emptied within moments of outgrowing its limit
            largest = max(largest, wal_size(partition))
        code, out, err = finished(ingesting)
        assert code == 0, err
        assert json.loads(out)["rows_inserted"] == ROWS
        assert [reader.poll() for reader in readers] == [None, None]  # no search failed meanwhile
    finally:
        for reader in readers:
            reader.kill()
            reader.communicate()
    print(f"largest -wal {largest / 1e6:.1f} MB beside a {partition.stat().st_size / 1e6:.1f} MB file")
    assert largest < 3 * WAL_LIMIT  # the limit, a batch over it, and a checkpoint left to the next batch
