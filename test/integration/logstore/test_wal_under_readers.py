"""A partition searched without pause while a real `logdb ingest`, `fts build|rebuild` or `bundle import`
writes it keeps its -wal near its usual size. Before, SQLite's automatic (PASSIVE) checkpoints could never
start the -wal over while some reader was in it, and it grew by every row ingested: in a soak of the
gateway with a search loop the day's -wal reached 156 MB beside a 99 MB file; here it reached the size of
everything ingested, then of every index batch of a rebuild and of every import on top of it. (`merge`
writes a temporary file no search reads: its -wal is the same with readers or without.)"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiproxy.logstore.partitions import partition_path
from aiproxy.logstore.wal_limit import LIMIT_CHECKPOINTS, wal_bytes
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


def ingested(tmp_path: Path, first: int, n: int, **env: str) -> Path:
    """`logdb ingest` of records first.. into tmp_path/cli-db; returns their partition."""
    write_jsonl(tmp_path / f"{first}.jsonl", records(first, n))
    assert finished(logdb(tmp_path, "ingest", "--from", f"{first}.jsonl", **SETTINGS, **env))[0] == 0
    return partition_path(tmp_path / "cli-db", T0.date(), "daily")


@pytest.fixture
def searched(tmp_path) -> Iterator[Callable[[subprocess.Popen, Path], tuple[int, str]]]:
    """Two processes searching tmp_path/cli-db without pause; yields `largest_wal(writer, partition)`,
    which waits for the writer to exit 0 and returns the largest size it saw `partition`'s -wal at
    meanwhile, and what the writer printed."""
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "cli-db")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]

    def largest_wal(writer: subprocess.Popen, partition: Path) -> tuple[int, str]:
        largest = 0
        while writer.poll() is None:  # sampled: the -wal is emptied within moments of outgrowing its limit
            largest = max(largest, wal_bytes(partition))
        code, out, err = finished(writer)
        assert code == 0, err
        assert [reader.poll() for reader in readers] == [None, None]  # no search failed meanwhile
        print(f"largest -wal {largest / 1e6:.1f} MB beside a {partition.stat().st_size / 1e6:.1f} MB file")
        return largest, out

    try:
        for reader in readers:
            assert reader.stdout.readline() == "ready\n", reader.communicate()[1]
        yield largest_wal
    finally:
        for reader in readers:
            reader.kill()
            reader.communicate()


def test_the_wal_stays_bounded_while_searches_never_stop(tmp_path, searched):
    partition = ingested(tmp_path, 0, 10)
    write_jsonl(tmp_path / "rest.jsonl", records(10, ROWS))
    largest, out = searched(logdb(tmp_path, "ingest", "--from", "rest.jsonl", "--json", **SETTINGS), partition)
    assert json.loads(out)["rows_inserted"] == ROWS
    assert largest < 3 * WAL_LIMIT  # the limit, a batch over it, and a checkpoint left to the next batch


def test_fts_build_and_rebuild_keep_the_wal_bounded_while_searches_never_stop(tmp_path, searched):
    """Was: 33 MB in a rebuild of 5000 rows, whose index takes 15 MB: its batches and its optimize, all kept
    (12.6 MB without readers: the optimize writes the whole index in one transaction)."""
    partition = ingested(tmp_path, 0, ROWS, LOGDB_FTS_ENABLED="false")
    unindexed = partition.stat().st_size
    largest, out = searched(logdb(tmp_path, "fts", "build", **SETTINGS), partition)
    assert out == f"{partition} indexed={2 * ROWS} skipped=0\n"
    index = partition.stat().st_size - unindexed
    assert largest < WAL_LIMIT + index  # at most the limit and the optimize's one transaction
    largest, out = searched(logdb(tmp_path, "fts", "rebuild", **SETTINGS), partition)
    assert out == f"{partition} indexed={2 * ROWS} skipped=0\n"
    assert largest < WAL_LIMIT + index


def test_bundle_imports_keep_the_wal_bounded_while_searches_never_stop(tmp_path, searched):
    """Was: each import's rows added to what the -wal already held (52, 70, 94 MB after a rebuild)."""
    partition = ingested(tmp_path, 0, 10)
    bundles = []
    for number in range(4):  # ~4 MB of rows and index each, for the same day
        source = tmp_path / f"source-{number}"
        source.mkdir()
        ingested(source, ROWS * (number + 1), ROWS // 5)
        bundles.append(source / "day.tar.gz")
        code, _, err = finished(logdb(source, "bundle", "create", "--since", T0.date().isoformat(),
                                      "--to", T0.date().isoformat(), "--out", str(bundles[-1]), **SETTINGS))
        assert code == 0, err
    largest = max(searched(logdb(tmp_path, "bundle", "import", str(bundle), **SETTINGS), partition)[0]
                  for bundle in bundles)
    assert largest < 3 * WAL_LIMIT  # one import's rows over the limit at most, not every import's
