"""A log store that this process may not write — on a read-only mount, or owned by another user —
is read as it is: every reading command answers in full and leaves no file behind, a writing
command says which file is read-only (not "restore it from a backup"), `bundle create` archives
it, and a really damaged file in it is still told apart as damage. Reproduced for real as root
with user namespaces (aiproxy.testing.readonly), in a `logdb` / gateway subprocess."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from aiproxy.logstore import partitions
from aiproxy.testing import readonly
from aiproxy.testing.bundles import damage_partition, filled_store
from aiproxy.testing.gateway import ADMIN_KEY, GatewayProcess
from aiproxy.testing.logrecords import make_store

pytestmark = pytest.mark.skipif(not readonly.available(), reason="needs unprivileged user namespaces (unshare)")
LOGDB = [sys.executable, "-m", "aiproxy.entrypoints.logdb"]


def _files(base: Path) -> dict[str, str]:
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(base.rglob("*")) if p.is_file()}


class ReadOnlyStore:
    """Three days in `<tmp>/store/db` (request logs beside it), made read-only `how`-wise."""

    def __init__(self, tmp_path: Path, how: str, damaged: str | None = None) -> None:
        self.root = tmp_path / "store"
        self.base = self.root / "db"
        filled_store(self.base, days=3, turns=3)
        store = make_store(self.base, server_id="srv-a")
        part = partitions.discover(self.base)[0]
        with store.connected(part.path) as db:
            self.request_id = db.execute_sql("SELECT request_id FROM requests LIMIT 1").fetchone()[0]
        store.close()
        if damaged:
            self.damaged = partitions.partition_path(self.base, partitions.parse_day("2025-09-06"))
            damage_partition(self.damaged, damaged)
        self.before = _files(self.root)
        self.prefix = readonly.command(self.root, how)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix, *LOGDB, *argv, "--db", str(self.base)], capture_output=True, text=True,
                              timeout=60)

    def untouched(self) -> bool:
        return _files(self.root) == self.before


@pytest.fixture(params=readonly.WAYS)
def ro_store(request, tmp_path):
    return ReadOnlyStore(tmp_path, request.param)


def test_reading_commands_answer_in_full_and_leave_no_file(ro_store):
    done = ro_store.run("search", "sailing", "--json")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert len(json.loads(done.stdout)["results"]) == 9
    stats = json.loads(ro_store.run("stats", "--json").stdout)
    assert (stats["partitions"], stats["requests"], stats["warnings"]) == (3, 9, [])
    done = ro_store.run("dialogs", "list", "--json")
    assert done.returncode == 0 and [d["requests"] for d in json.loads(done.stdout)["dialogs"]] == [3, 3, 3]
    done = ro_store.run("show", ro_store.request_id, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["summary"]["request_id"] == ro_store.request_id
    assert ro_store.untouched()  # no -wal, no -shm, no byte changed


@pytest.mark.parametrize("argv", [("fts", "rebuild"), ("dialogs", "clear")])
def test_writing_commands_name_the_read_only_file(ro_store, argv):
    done = ro_store.run(*argv)
    lines = done.stdout.splitlines()
    assert done.returncode == 1 and len(lines) == 3
    assert all(" error=" in line and "read-only" in line and "backup" not in line for line in lines)
    assert ro_store.untouched()


def test_ingest_says_the_store_is_read_only(ro_store):
    done = ro_store.run("ingest", "--from", str(ro_store.root / "db-logs"))
    assert done.returncode == 1 and "control.sqlite3" in done.stderr and "read-only" in done.stderr
    assert "move it out" not in done.stderr and "backup" not in done.stderr
    assert ro_store.untouched()


def test_bundle_create_archives_a_read_only_store(ro_store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    done = ro_store.run("bundle", "create", "--since", "2025-09-01", "--to", "2025-09-30", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["rows"], json.loads(done.stdout)["files"]) == (9, 3)
    assert ro_store.untouched()


def test_bundle_import_into_a_read_only_store_names_what_it_cannot_write(ro_store, tmp_path):
    source = tmp_path / "source" / "db"
    filled_store(source, days=1, turns=1, topic="rowing", start=datetime(2025, 9, 8, 12, tzinfo=UTC))
    out = tmp_path / "out"
    out.mkdir()
    created = subprocess.run([*LOGDB, "bundle", "create", "--since", "2025-09-08", "--to", "2025-09-08", "--out", str(out),
                              "--db", str(source), "--json"], capture_output=True, text=True, timeout=60)
    bundle = json.loads(created.stdout)["path"]
    done = subprocess.run([*ro_store.prefix, *LOGDB, "bundle", "import", bundle, "--dest", str(ro_store.base)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and str(ro_store.base) in done.stderr
    assert ("Read-only file system" in done.stderr or "Permission denied" in done.stderr) and "backup" not in done.stderr
    assert ro_store.untouched()


@pytest.mark.parametrize("how", readonly.WAYS)
def test_a_damaged_file_in_a_read_only_store_is_still_damage(tmp_path, how):
    store = ReadOnlyStore(tmp_path, how, damaged="not_a_database")
    done = store.run("search", "sailing", "--json")
    assert done.returncode == 1 and len(json.loads(done.stdout)["results"]) == 6
    assert done.stderr.count("\n") == 1 and str(store.damaged) in done.stderr
    assert "restore it from a backup" in done.stderr and "read-only" not in done.stderr.split(":", 2)[2].split(";")[0]


def test_the_gateway_serves_a_read_only_store(tmp_path):
    workdir = tmp_path / "gw"
    base = workdir / "logs" / "db"
    filled_store(base, days=3, turns=3)
    prefix = readonly.command(base, "read_only_mount")
    env = {"LOGDB_SERVER_ID": "srv-a", "LOGDB_ENABLED": "false"}
    with GatewayProcess(workdir, env=env, prefix=prefix) as gateway, \
            httpx.Client(base_url=gateway.root_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as http:
        found = http.get("/v1/logs/requests", params={"q": "sailing"})
        assert found.status_code == 200 and "warnings" not in found.json(), found.text
        assert len(found.json()["results"]) == 9
        stats = http.get("/v1/logs/stats").json()
        assert (stats["partitions"], stats["requests"]) == (3, 9)


READER = """
import sys
from pathlib import Path
from aiproxy.testing.logrecords import make_store
store = make_store(Path(sys.argv[1]), server_id="srv-a")
for _ in sys.stdin:
    with store.connected(Path(sys.argv[2])) as db:
        print(db.execute_sql("SELECT COUNT(*) FROM requests").fetchone()[0], db.immutable_stamp is not None, flush=True)
"""


def test_a_file_read_immutable_is_reopened_once_its_owner_writes_it(tmp_path):
    """No -wal and no -shm, in a directory this process cannot write: read with immutable=1, which
    must not outlive a writer (it would miss its commits, or read torn pages)."""
    store = ReadOnlyStore(tmp_path, "other_owner")
    path = partitions.discover(store.base)[0].path
    reader = subprocess.Popen([*store.prefix, sys.executable, "-c", READER, str(store.base), str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def count() -> str:
        reader.stdin.write("\n")
        reader.stdin.flush()
        return reader.stdout.readline().split()

    try:
        assert count() == ["3", "True"]
        owner = sqlite3.connect(path)  # the owner (this test, outside the namespace) writes, WAL open
        owner.execute("DELETE FROM requests WHERE rowid = (SELECT MIN(rowid) FROM requests)")
        owner.commit()
        assert count() == ["2", "False"]  # read as any reader (mode=ro), beside the live writer
        owner.close()
    finally:
        reader.stdin.close()
        assert reader.wait(30) == 0


def test_merge_reads_a_read_only_store_into_a_local_file(ro_store, tmp_path):
    target = tmp_path / "merged.sqlite3"
    done = subprocess.run([*ro_store.prefix, *LOGDB, "merge", "--from", str(ro_store.base), "--to", str(target)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert "sources=3 total_requests=9 integrity=ok" in done.stdout
    assert ro_store.untouched()


def test_a_file_another_process_keeps_locked_is_not_read_around_its_lock(tmp_path):
    """`immutable=1` is the way to read a file on a read-only mount, not round a lock: a file
    another process held locked past the busy timeout (a write half done, in a rollback journal as
    in the seed's files) was read through it, ignoring the lock, and a merge went on with it."""
    from aiproxy.logstore.database import open_read_only
    from aiproxy.logstore.settings import LogStoreSettings
    from aiproxy.testing.logdb_processes import locked

    store = filled_store(tmp_path / "a", days=1)
    partition = store.existing()[0].path
    settings = LogStoreSettings.from_mapping({"busy_timeout_ms": 50})
    with locked(partition), pytest.raises(Exception) as refused:  # noqa: PT011 - peewee's or sqlite3's error
        open_read_only(partition, settings).execute_sql("SELECT count(*) FROM requests").fetchone()
    assert "locked" in str(refused.value)
    db = open_read_only(partition, settings)  # the lock gone, it reads as any reader does
    try:
        assert db.execute_sql("SELECT count(*) FROM requests").fetchone()[0] > 0
    finally:
        db.close()
