"""Real `cmd/logdb` processes for tests that stop one half-way: run it, hold a store file under an
exclusive lock so the command waits in SQLite's busy handler once it reaches it, see it has opened
that file (/proc/PID/fd) and signal it there; half-way is certain, not timed."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def logdb(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    """`logdb ARGS` in `tmp_path` on the store tmp_path/cli-db (unless `env` says otherwise)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOGDB_")}
    environ.update({"LOGDB_DIR": str(tmp_path / "cli-db"), "LOGDB_BUSY_TIMEOUT_MS": "120000", **env})  # waits for a lock
    return subprocess.Popen([sys.executable, str(REPO / "cmd" / "logdb"), *args], cwd=tmp_path, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@contextlib.contextmanager
def locked(database: Path):
    """Hold `database` under an exclusive lock: readers and writers wait (a rollback journal, as in
    seed files: in WAL mode readers never wait for a writer)."""
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.close()


def wait_until_open(process: subprocess.Popen, path: Path) -> None:
    deadline = time.monotonic() + 60
    fds = Path(f"/proc/{process.pid}/fd")
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):  # an fd closed while we look
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                return
        time.sleep(0.01)
    pytest.fail(f"logdb never opened {path} (exit {process.poll()}: {process.stderr.read() if process.poll() else ''})")


def interrupt(process: subprocess.Popen, sig: signal.Signals, held: Path) -> None:
    """Signal `process` once it waits for the locked file `held`."""
    wait_until_open(process, held)
    process.send_signal(sig)
    if sig == signal.SIGKILL:
        process.wait(timeout=60)  # before the lock goes: it must not finish meanwhile


def stopped_line(sig: signal.Signals) -> str:
    """What logdb prints when a signal it handles stops it (exit code 128 + sig)."""
    why = "interrupted" if sig == signal.SIGINT else f"stopped by {sig.name}"
    return f"logdb: {why}; run the same command again to finish\n"
