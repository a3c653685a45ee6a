"""A real `logdb merge` stopped by a signal in the middle of one long SQLite statement (its INSERT…SELECT
of a large partition): it ends within a moment, with the same line, exit code and clean-up as a stop
between statements. Before, Python ran the signal handler only once the statement returned (seconds
here, minutes for a large store), and only then did logdb stop.

Mid-statement is seen, not timed: the merge's temporary target has its -wal growing."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from aiproxy.logstore import partitions
from aiproxy.logstore.database import REQUEST_COLUMNS
from aiproxy.testing.bundles import filled_store
from aiproxy.testing.logdb_processes import finished, logdb, stopped_line

ROWS = 500_000  # ~500 MB: the INSERT…SELECT copying them takes ~5 s
STOPPED_WITHIN_S = 1.0  # measured: 0.04-0.16 s from the signal to the exit; before, 2.3-3.3 s (the rest of the statement)


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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_a_merge_signalled_mid_statement_stops_at_once(tmp_path, large_store, sig):
    target = tmp_path / "all.sqlite3"
    merging = logdb(tmp_path, "merge", "--from", str(large_store), "--to", str(target))
    wait_until_writing(tmp_path, ".all.sqlite3.*.tmp-wal", 1 << 20)  # the rows are going in
    merging.send_signal(sig)
    signalled = time.monotonic()
    code, out, err = finished(merging)
    took = time.monotonic() - signalled
    print(f"{sig.name}: exited {took:.2f} s after the signal")
    assert (code, out, err) == (128 + sig, "", stopped_line(sig))
    assert list(tmp_path.iterdir()) == []  # no target, no temporary file
    assert took < STOPPED_WITHIN_S
