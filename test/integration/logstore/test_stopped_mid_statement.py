"""A real `logdb merge` stopped by a signal in the middle of one long SQLite statement (its INSERT…SELECT
of a large partition), and a real `logdb bundle create` in the middle of its backup-API copy of one:
each ends within a moment, with the same line, exit code and clean-up as a stop between statements.
Before, Python ran the signal handler only once the statement (or the copy) returned (seconds here,
minutes for a large store), and only then did logdb stop.

Mid-statement is seen, not timed: the merge's temporary target has its -wal growing, the bundle's
snapshot of the partition its file."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from aiproxy.logstore import partitions
from aiproxy.logstore.bundles.manifest import sha256_file
from aiproxy.logstore.database import REQUEST_COLUMNS
from aiproxy.testing.bundles import filled_store
from aiproxy.testing.logdb_processes import finished, logdb, stopped_line

ROWS = 500_000  # ~500 MB: the INSERT…SELECT copying them takes ~5 s
STOPPED_WITHIN_S = 1.0  # measured: 0.04-0.16 s from the signal to the exit; before, 2.3-3.3 s (the rest of the statement)
COPY_STOPPED_WITHIN_S = 0.5  # measured: 0.05-0.09 s; before, 1.3-2.0 s (the rest of the partition's copy)


@pytest.fixture(scope="module")
def large_store(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("large") / "db"
    filled_store(base, days=1)
    columns = ", ".join(f'"{c}"' for c in REQUEST_COLUMNS)
    copies = ", ".join("'copy-' || n.i" if c == "request_id" else f'r."{c}"' for c in REQUEST_COLUMNS)
    with sqlite3.connect(partitions.discover(base)[0].path) as conn:
        conn.execute(f"INSERT INTO requests ({columns})"
                     " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                     f" SELECT {copies} FROM n, (SELECT * FROM requests LIMIT 1) r", (ROWS,))
    return base


def wait_until_writing(directory: Path, pattern: str, size: int) -> None:
    """Until a file matching `pattern` in `directory` holds `size` bytes."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.stat().st_size >= size for p in directory.glob(pattern)):
            return
        time.sleep(0.01)
    pytest.fail(f"nothing matching {pattern} grew to {size} bytes")


def stopped(process, sig: signal.Signals) -> float:
    """Signal `process`; seconds until it exited as a stop by `sig` does: its one line, its exit code."""
    process.send_signal(sig)
    signalled = time.monotonic()
    code, out, err = finished(process)
    took = time.monotonic() - signalled
    print(f"{sig.name}: exited {took:.2f} s after the signal")
    assert (code, out, err) == (128 + sig, "", stopped_line(sig))
    return took


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_a_merge_signalled_mid_statement_stops_at_once(tmp_path, large_store, sig):
    target = tmp_path / "all.sqlite3"
    merging = logdb(tmp_path, "merge", "--from", str(large_store), "--to", str(target))
    wait_until_writing(tmp_path, ".all.sqlite3.*.tmp-wal", 1 << 20)  # the rows are going in
    took = stopped(merging, sig)
    assert list(tmp_path.iterdir()) == []  # no target, no temporary file
    assert took < STOPPED_WITHIN_S


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_a_merge_signalled_while_copying_its_existing_target_stops_at_once(tmp_path, large_store, sig):
    """Was: the existing --to was copied into the temporary target with one backup step."""
    target = tmp_path / "all.sqlite3"
    shutil.copyfile(partitions.discover(large_store)[0].path, target)  # a large earlier merge
    before = sha256_file(target)
    small = tmp_path / "small"
    filled_store(small, days=1)
    merging = logdb(tmp_path, "merge", "--from", str(small), "--to", str(target))
    wait_until_writing(tmp_path, ".all.sqlite3.*.tmp", 1 << 20)  # the target is being copied
    took = stopped(merging, sig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.sqlite3", "small", "small-logs"]  # no temporary file
    assert sha256_file(target) == before
    assert took < COPY_STOPPED_WITHIN_S


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_a_bundle_create_signalled_mid_copy_stops_at_once(tmp_path, large_store, sig):
    """Was: the partition was copied with one backup step, which no progress handler reaches."""
    out = tmp_path / "out"
    out.mkdir()
    [day] = {p.first_day for p in partitions.discover(large_store)}
    creating = logdb(tmp_path, "bundle", "create", "--db", str(large_store), "--since", str(day), "--to", str(day),
                     "--out", str(out / "b.tgz"))
    wait_until_writing(out, ".bundle-snapshots-*/*.sqlite3", 1 << 20)  # the partition is being copied
    took = stopped(creating, sig)
    assert list(out.iterdir()) == []  # no archive, no temporary file, no snapshot directory
    assert took < COPY_STOPPED_WITHIN_S
