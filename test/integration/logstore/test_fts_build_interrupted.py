"""`logdb fts build` gives a partition its index whole or not at all. It commits batch by batch (live
ingest waits for a batch, not for the build), but into an index of its own, put in place only once it
holds every row. Before, the batches went into the partition's index itself: a search during a build,
or after one was stopped, searched the rows indexed so far as if they were all (exit 0, no warning).
Real processes: the build is stopped once its first batches are committed, seen by reading the file."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiproxy.logstore.bundles.members import has_partition_shape
from aiproxy.logstore.database import BUILDING_TABLE, FTS_TABLE
from aiproxy.logstore.partitions import partition_path
from aiproxy.testing.logdb_processes import finished, logdb, stopped_line
from aiproxy.testing.logrecords import chat_record, write_jsonl

T0 = datetime(2025, 9, 10, 1, tzinfo=UTC)
ROWS = 8000  # 16 batches: a few seconds of building


@pytest.fixture
def unindexed(tmp_path) -> Path:
    """A store of ROWS requests ingested with FTS off; returns its partition."""
    write_jsonl(tmp_path / "logs" / "requests.jsonl", [
        chat_record([{"role": "user", "content": f"walrus {i} " + "lorem ipsum dolor sit amet " * 20}], f"answer {i}",
                    ts=T0 + timedelta(seconds=i)) for i in range(ROWS)])
    assert finished(logdb(tmp_path, "ingest", "--from", "logs", LOGDB_FTS_ENABLED="false"))[0] == 0
    return partition_path(tmp_path / "cli-db", T0.date(), "daily")


def fragments_committed(partition: Path) -> int:
    """Fragments a reader sees in whichever index the build fills."""
    with sqlite3.connect(f"file:{partition}?mode=ro", uri=True) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in (BUILDING_TABLE, FTS_TABLE)
                   if t in tables)


def wait_until_building(partition: Path) -> None:
    deadline = time.monotonic() + 60
    while fragments_committed(partition) == 0:
        assert time.monotonic() < deadline, "the build committed nothing"
        time.sleep(0.01)


def search(tmp_path: Path, query: str) -> tuple[int, dict]:
    code, out, err = finished(logdb(tmp_path, "search", query, "--limit", "500", "--json"))
    assert "Traceback" not in err
    return code, json.loads(out)


def test_a_search_after_an_interrupted_build_says_the_index_is_missing_and_a_new_build_completes_it(tmp_path, unindexed):
    building = logdb(tmp_path, "fts", "build")
    wait_until_building(unindexed)
    building.send_signal(signal.SIGTERM)
    assert finished(building) == (128 + signal.SIGTERM, "", stopped_line(signal.SIGTERM))
    done = fragments_committed(unindexed)
    assert 0 < done < 2 * ROWS  # stopped part-way (two fragments a request: question, answer)

    code, found = search(tmp_path, "lorem")
    assert (code, found["results"]) == (1, [])  # nothing from a part of the rows taken for all of them
    assert "1 of 1 partitions in range have no full-text index" in found["warnings"][0]

    code, out, err = finished(logdb(tmp_path, "fts", "build"))  # goes on from what the first one committed
    assert code == 0, err
    assert out == f"{unindexed} indexed={2 * ROWS - done} skipped=0\n"
    code, found = search(tmp_path, "walrus")
    assert code == 0 and len(found["results"]) == 500 and found["warnings"] == []
    with sqlite3.connect(unindexed) as conn:
        assert conn.execute(f"SELECT COUNT(DISTINCT request_id) FROM {FTS_TABLE}").fetchone()[0] == ROWS
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (BUILDING_TABLE,)).fetchone()
        assert has_partition_shape(conn)  # as ingest makes one: a bundle of it is adopted whole on import


def test_fts_drop_during_a_build_ends_the_build_with_one_line(tmp_path, unindexed):
    building = logdb(tmp_path, "fts", "build")
    wait_until_building(unindexed)
    building.send_signal(signal.SIGSTOP)  # between two batches, or in one: then let it finish that one
    try:
        while not write_lock_free(unindexed):
            building.send_signal(signal.SIGCONT)
            building.send_signal(signal.SIGSTOP)
        code, out, err = finished(logdb(tmp_path, "fts", "drop"))
        assert (code, err) == (0, ""), err
    finally:
        building.send_signal(signal.SIGCONT)
    code, out, err = finished(building)
    assert (code, err) == (1, "")
    assert out == f"{unindexed} error=its index was dropped (`logdb fts drop`) while this built it\n"
    with sqlite3.connect(unindexed) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name IN (?, ?)", (FTS_TABLE, BUILDING_TABLE)).fetchone()


def write_lock_free(partition: Path) -> bool:
    conn = sqlite3.connect(partition, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def test_two_builds_of_one_partition_at_once_both_end_and_index_each_row_once(tmp_path, unindexed):
    first, second = logdb(tmp_path, "fts", "build"), logdb(tmp_path, "fts", "build")
    wait_until_building(unindexed)
    assert first.poll() is None and second.poll() is None  # both running while batches were committed
    indexed = 0
    for building in (first, second):
        code, out, err = finished(building)
        assert (code, err) == (0, ""), err
        assert out.startswith(f"{unindexed} indexed=") and out.endswith(" skipped=0\n")
        indexed += int(out.split("indexed=")[1].split()[0])
    assert indexed == 2 * ROWS  # each fragment indexed by one of them
    with sqlite3.connect(unindexed) as conn:  # two fragments a request (question, answer), none twice
        assert conn.execute(f"SELECT COUNT(*), COUNT(DISTINCT request_id) FROM {FTS_TABLE}").fetchone() == (2 * ROWS, ROWS)
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (BUILDING_TABLE,)).fetchone()
    code, found = search(tmp_path, "walrus")
    assert code == 0 and len(found["results"]) == 500 and found["warnings"] == []
