"""Output files of `logdb merge` and `logdb bundle create`, as real logdb processes write them: they
appear only when complete, so a process killed (SIGKILL) or stopped (Ctrl-C, SIGTERM, SIGHUP) half-way
leaves nothing at the destination, or the earlier file intact, and the same command again succeeds; a
stopped one also leaves no temporary file or snapshot directory beside it. `bundle create` replaces an
existing file only with --force.

Half-way is certain, not timed: the last partition is held under an exclusive lock, so the command
waits for it once every earlier one is written (aiproxy.testing.logdb_processes)."""

import hashlib
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from aiproxy.testing.bundles import filled_store
from aiproxy.testing.logdb_processes import finished, interrupt, locked, logdb, stopped_line, wait_until_open

# Each way a run is cut short: killed outright, or stopped by a signal logdb handles (one line, 128 + signal).
SIGNALS = pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                                  ids=["kill-9", "ctrl-c", "sigterm", "sighup"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_interrupted(process: subprocess.Popen, sig: signal.Signals) -> None:
    code, out, err = finished(process)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:  # logdb's one line and 128 + signal, as for every command; its temporary files are gone (before,
        # SIGTERM and SIGHUP killed it on the spot, -15 and -1, and left them behind)
        assert (code, out, err) == (128 + sig, "", stopped_line(sig))


@SIGNALS
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
    if sig != signal.SIGKILL:
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


@SIGNALS
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
    if sig != signal.SIGKILL:  # neither the archive's temporary file nor the .bundle-snapshots-* directory
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    code, printed, err = finished(create(tmp_path, store, archive, *flags))
    assert (code, err) == (0, "") and printed.startswith(f"{archive} files=3 rows=9 ")
    assert finished(logdb(tmp_path, "bundle", "verify", str(archive)))[:2] == (0, "ok\n")


def test_a_stop_whose_line_cannot_be_printed_still_cleans_up_and_exits_by_the_signal(tmp_path):
    """SIGHUP comes when the terminal went away: the stop line cannot be written then, and the failed
    print ended logdb with a traceback nobody saw (exit 1) instead of 128 + SIGHUP."""
    store = filled_store(tmp_path / "b", server_id="srv-b", days=3)
    last = store.existing()[-1].path
    out = tmp_path / "out"
    out.mkdir()
    with locked(last):
        merging = logdb(tmp_path, "merge", "--from", str(tmp_path / "b"), "--to", str(out / "all.sqlite3"))
        wait_until_open(merging, last)
        merging.stderr.close()  # the terminal is gone
        merging.send_signal(signal.SIGHUP)
    assert merging.wait(timeout=60) == 128 + signal.SIGHUP
    merging.stdout.close()
    assert list(out.iterdir()) == []
