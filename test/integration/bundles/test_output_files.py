"""Output files of `logdb merge` and `logdb bundle create`, as real logdb processes write them: they
appear only when complete, so a process killed (SIGKILL) or interrupted (SIGINT, Ctrl-C) half-way
leaves nothing at the destination, or the earlier file intact, and the same command again succeeds;
`bundle create` replaces an existing file only with --force.

Half-way is certain, not timed: the last partition is held under an exclusive lock, so the command
waits in SQLite's busy handler once it reaches it (every earlier one already written); the test
sees it has opened that file (/proc/PID/fd) and signals it there."""

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiproxy.testing.bundles import filled_store

REPO = Path(__file__).resolve().parents[3]
INTERRUPTED = "logdb: interrupted; run the same command again to finish\n"


def logdb(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGDB_")}
    env.update(LOGDB_DIR=str(tmp_path / "cli-db"), LOGDB_BUSY_TIMEOUT_MS="120000")  # waits for the lock, not fails
    return subprocess.Popen([sys.executable, str(REPO / "cmd" / "logdb"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@contextlib.contextmanager
def locked(partition: Path):
    """Hold `partition` under an exclusive lock: readers wait (a rollback journal, as in seed files:
    in WAL mode readers never wait for a writer)."""
    conn = sqlite3.connect(partition, isolation_level=None)
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


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def interrupt(process: subprocess.Popen, sig: signal.Signals, held: Path) -> None:
    wait_until_open(process, held)
    process.send_signal(sig)
    if sig == signal.SIGKILL:
        process.wait(timeout=60)  # before the lock goes: it must not finish meanwhile


def check_interrupted(process: subprocess.Popen, sig: signal.Signals) -> None:
    code, out, err = finished(process)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:  # Ctrl-C: logdb's one line and 130, as for every command; its temporary file is gone
        assert (code, out, err) == (130, "", INTERRUPTED)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "existing-target"])
def test_a_merge_interrupted_half_way_leaves_the_target_as_it_was_and_a_rerun_completes(tmp_path, sig, existing):
    """The merge wrote into --to itself: interrupted, a partial file (or an existing target with some
    sources merged in) looked like a finished merge."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / "all.sqlite3"
    if existing:  # merging into an existing file adds to it (docs/bundles.md): that stays so
        filled_store(tmp_path / "a", server_id="srv-a", days=3)
        assert finished(logdb(tmp_path, "merge", "--from", str(tmp_path / "a"), "--to", str(target)))[0] == 0
        before = digest(target)
    store = filled_store(tmp_path / "b", server_id="srv-b", days=3, topic="weaving")
    last = store.existing()[-1].path
    with locked(last):
        merging = logdb(tmp_path, "merge", "--from", str(tmp_path / "b"), "--to", str(target))
        interrupt(merging, sig, last)
    check_interrupted(merging, sig)
    if existing:
        assert digest(target) == before and sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
            "all.sqlite3"]
    else:
        assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
    if sig == signal.SIGINT:
        assert [p.name for p in out.iterdir()] == (["all.sqlite3"] if existing else [])
    code, printed, err = finished(logdb(tmp_path, "merge", "--from", str(tmp_path / "b"), "--to", str(target)))
    assert (code, printed, err) == (0, f"sources=3 total_requests={18 if existing else 9} integrity=ok\n", "")
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def create(tmp_path: Path, store, out: Path, *flags: str) -> subprocess.Popen:
    return logdb(tmp_path, "bundle", "create", "--since", "2025-09-01", "--to", "2025-09-30", "--db", str(store.base),
                 "--out", str(out), *flags)


def test_create_refuses_an_existing_out_file_unless_forced(tmp_path):
    """An existing --out file was silently replaced by the new archive."""
    store = filled_store(tmp_path / "a", days=2)
    out = tmp_path / "backup.tgz"
    out.write_bytes(b"last week's backup")
    code, printed, err = finished(create(tmp_path, store, out))
    assert (code, printed) == (2, "")
    assert err == f"logdb: {out} exists: pass --force to replace it, or choose another --out\n"
    assert out.read_bytes() == b"last week's backup" and [p.name for p in tmp_path.iterdir() if p.name[0] == "."] == []
    code, printed, err = finished(create(tmp_path, store, out, "--force"))
    assert (code, err) == (0, "") and printed.startswith(f"{out} files=2 rows=6 ")
    assert finished(logdb(tmp_path, "bundle", "verify", str(out)))[:2] == (0, "ok\n")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "forced-over-a-file"])
def test_a_create_interrupted_half_way_leaves_no_archive_and_a_rerun_completes(tmp_path, sig, existing):
    store = filled_store(tmp_path / "a", days=3)
    out = tmp_path / "out"
    out.mkdir()
    archive = out / "backup.tgz"
    flags = ("--force",) if existing else ()
    if existing:
        archive.write_bytes(b"last week's backup")
    last = store.existing()[-1].path
    with locked(last):
        creating = create(tmp_path, store, archive, *flags)
        interrupt(creating, sig, last)
    check_interrupted(creating, sig)
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == (["backup.tgz"] if existing else [])
    if existing:
        assert archive.read_bytes() == b"last week's backup"
    if sig == signal.SIGINT:
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    code, printed, err = finished(create(tmp_path, store, archive, *flags))
    assert (code, err) == (0, "") and printed.startswith(f"{archive} files=3 rows=9 ")
    assert finished(logdb(tmp_path, "bundle", "verify", str(archive)))[:2] == (0, "ok\n")
