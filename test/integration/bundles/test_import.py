"""`bundle import`: rows merged (not files skipped), dedup, dialogs and FTS kept, servers
recorded, all or nothing, newer schemas refused, any partition granularity."""

import contextlib
import errno
import hashlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from types import SimpleNamespace

import orjson
import pytest

from aiproxy.entrypoints.logdb import main
from aiproxy.logstore.bundles import verify
from aiproxy.logstore.bundles.create import create_bundle
from aiproxy.logstore.bundles.importer import import_bundle
from aiproxy.logstore.bundles.manifest import BundleError, NoSpace
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.search import search
from aiproxy.testing.bundles import filled_store, member, repack, tree_fingerprint, write_members
from aiproxy.testing.logrecords import chat_record, index_as_earlier_versions_did, make_store, write_jsonl

SEPTEMBER = (date(2025, 9, 1), date(2025, 9, 30))


def rows(base):
    """Every (request_id, server_id, dialog_id) under a store directory."""
    found = set()
    for path in (p for p in base.rglob("ai_proxy_*.sqlite3") if p.is_file()):
        with sqlite3.connect(path) as conn:
            found |= set(conn.execute("SELECT request_id, server_id, dialog_id FROM requests"))
    return found


def servers(path):
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT server_id FROM servers")}


def test_import_merges_rows_keeps_dialogs_and_indexes_them(tmp_path, bundle):
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=2, topic="gardening")
    before = rows(dest.base)
    assert main(["bundle", "import", str(bundle), "--dest", str(dest.base)]) == 0
    after = rows(dest.base)
    source = rows(tmp_path / "a")
    assert after == before | source  # same days, other server: rows merged into the same files
    assert len({d for _, s, d in after if s == "srv-a"}) == 3  # one dialog per day, ids as in the bundle
    store = make_store(dest.base)
    assert {h.fields["server_id"] for h in search(store, "sailing").hits} == {"srv-a"}
    assert {h.fields["server_id"] for h in search(store, "gardening").hits} == {"srv-b"}
    assert "srv-a" in servers(dest.base / "2025/09/ai_proxy_20250905.sqlite3")
    store.close()


def test_import_into_days_whose_index_was_dropped_leaves_them_unindexed_not_partly(tmp_path, bundle):
    """Was: the imported rows' fragments gave such a day an index of them alone, which search took
    for the whole day; it stays without one until `fts build` indexes every row."""
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=2, topic="gardening")
    dest.close()
    assert main(["fts", "drop", "--db", str(dest.base), "--since", "2025-09-01", "--to", "2025-09-30"]) == 0
    assert main(["bundle", "import", str(bundle), "--dest", str(dest.base)]) == 0
    store = make_store(dest.base)
    found = search(store, "sailing").hits  # the bundle's three days, two of them the dropped ones
    assert len(found) == 3 and len({h.fields["ts_iso"][:10] for h in found}) == 1  # the day that was new
    assert search(store, "gardening").hits == []
    assert main(["fts", "build", "--db", str(dest.base), "--since", "2025-09-01", "--to", "2025-09-30"]) == 0
    assert {h.fields["server_id"] for h in search(store, "gardening").hits} == {"srv-b"}
    assert len(search(store, "sailing").hits) == 9
    store.close()


def test_reimport_changes_nothing(tmp_path, bundle, capsys):
    dest = tmp_path / "b"
    assert main(["bundle", "import", str(bundle), "--dest", str(dest)]) == 0
    first = capsys.readouterr().out
    assert "rows_imported=9 rows_skipped=0 partitions=3 new_partitions=3" in first
    fingerprint = tree_fingerprint(dest)
    assert main(["bundle", "import", str(bundle), "--dest", str(dest)]) == 0
    assert "rows_imported=0 rows_skipped=9 partitions=0" in capsys.readouterr().out
    assert tree_fingerprint(dest) == fingerprint


@pytest.mark.parametrize(("source", "dest", "files", "dest_files"), [
    ("weekly", "daily", ["2025/W36/ai_proxy_2025W36.sqlite3", "2025/W37/ai_proxy_2025W37.sqlite3"], 5),
    ("monthly", "weekly", ["2025/M09/ai_proxy_202509.sqlite3"], 2),
    ("daily", "monthly", [f"2025/09/ai_proxy_202509{d:02d}.sqlite3" for d in range(5, 10)], 1),
])
def test_weekly_and_monthly_partitions(tmp_path, source, dest, files, dest_files):
    store = filled_store(tmp_path / "a", days=5, partition_granularity=source)  # Fri 5th .. Tue 9th September
    result = create_bundle(store, *SEPTEMBER, tmp_path / "a.tgz")
    assert result.files == len(files) and result.rows == 15  # each file once (the seed: once per day)
    target = make_store(tmp_path / "b", partition_granularity=dest)
    assert import_bundle(result.path, target).rows_imported == 15
    assert len(target.existing()) == dest_files  # rows land where the destination's layout puts them
    assert rows(tmp_path / "b") == rows(tmp_path / "a")
    assert import_bundle(result.path, target).rows_imported == 0
    target.close()


def _newer_schema(meta):
    meta["schema_version"] = 99
    return meta


def test_a_bundle_from_a_newer_schema_is_refused(tmp_path, bundle, capsys):
    newer = repack(bundle, tmp_path / "newer.tgz", metadata=_newer_schema)
    assert main(["bundle", "import", str(newer), "--dest", str(tmp_path / "b")]) == 2
    assert "schema version 99, newer than this aiproxy's" in capsys.readouterr().err
    assert not list((tmp_path / "b").rglob("*.sqlite3"))


@pytest.mark.parametrize("fmt", ["aiproxy.logbundle.v2", "something.else", 2])
def test_a_bundle_of_another_format_is_refused(tmp_path, bundle, capsys, fmt):
    """It was imported as if it were ours (the seed's bundles, without `format`, still are)."""
    other = repack(bundle, tmp_path / "other.tgz", metadata=lambda meta: {**meta, "format": fmt})
    assert main(["bundle", "import", str(other), "--dest", str(tmp_path / "b")]) == 2
    assert f"bundle format {fmt!r} is not aiproxy.logbundle.v1" in capsys.readouterr().err
    assert not list((tmp_path / "b").rglob("*.sqlite3"))
    seed = repack(bundle, tmp_path / "seed.tgz", metadata=lambda meta: {k: v for k, v in meta.items() if k != "format"})
    assert import_bundle(seed, make_store(tmp_path / "b")).rows_imported == 9


def test_a_partition_from_a_newer_schema_is_refused(tmp_path, bundle, capsys):
    def bump(name, data):
        if not name.endswith("20250907.sqlite3"):
            return data
        path = tmp_path / "member.sqlite3"
        path.write_bytes(data)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version = 99")
        return path.read_bytes()

    newer = repack(bundle, tmp_path / "newer.tgz", bump, fix_metadata=True)
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1)
    fingerprint = tree_fingerprint(dest.base)
    assert main(["bundle", "import", str(newer), "--dest", str(dest.base)]) == 2
    err = capsys.readouterr().err
    assert "bundle member db/2025/09/ai_proxy_20250907.sqlite3 has" in err and "newer than this aiproxy's" in err
    assert tree_fingerprint(dest.base) == fingerprint


def test_a_failure_on_the_last_partition_leaves_the_destination_byte_for_byte(tmp_path, bundle, capsys):
    # A consistent bundle (checksums match) whose third partition is not a database.
    corrupt = repack(bundle, tmp_path / "corrupt.tgz",
                     lambda n, d: b"\0" * len(d) if n.endswith("20250907.sqlite3") else d, fix_metadata=True)
    assert main(["bundle", "verify", str(corrupt)]) == 0
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=2)  # holds the 5th and 6th already
    fingerprint = tree_fingerprint(dest.base)
    assert main(["bundle", "import", str(corrupt), "--dest", str(dest.base)]) == 1
    assert "not a usable log database" in capsys.readouterr().err
    assert tree_fingerprint(dest.base) == fingerprint


def test_a_failure_while_committing_undoes_the_partitions_already_committed(tmp_path, bundle):
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1)  # the 5th exists: merged into
    before_rows = rows(dest.base)
    blocker = dest.base / "2025/09/ai_proxy_20250907.sqlite3"
    blocker.mkdir(parents=True)  # the third target cannot be written
    store = make_store(dest.base)
    with pytest.raises(Exception):  # noqa: B017 - whatever SQLite says about a directory
        import_bundle(bundle, store)
    store.close()
    assert rows(dest.base) == before_rows
    assert not (dest.base / "2025/09/ai_proxy_20250906.sqlite3").exists()
    assert servers(dest.base / "2025/09/ai_proxy_20250905.sqlite3") == {"srv-b"}
    assert not (dest.base / "incoming").exists()


def test_undoing_a_published_partition_keeps_rows_another_process_wrote_there(tmp_path, bundle, monkeypatch):
    """Once linked, a new partition is the store's: the gateway's live ingest may write into it (or
    hold it open) before a later step fails. The undo removes the import's rows, not the file."""
    from aiproxy.logstore.bundles import importer

    real_link, links = os.link, []

    def link_then_fail(src, dst):
        links.append(dst)
        if len(links) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_link(src, dst)
        with sqlite3.connect(dst) as conn:  # a concurrent writer: its own server and row
            conn.executescript("""
                CREATE TEMP TABLE live AS SELECT * FROM requests LIMIT 1;
                UPDATE live SET request_id = 'live-row', server_id = 'srv-live';
                INSERT INTO requests SELECT * FROM live;
                INSERT INTO servers (server_id) VALUES ('srv-live');""")

    monkeypatch.setattr(importer.os, "link", link_then_fail)
    store = make_store(tmp_path / "b")
    with pytest.raises(NoSpace):
        import_bundle(bundle, store)
    store.close()
    assert len(links) == 2
    assert {(r, s) for r, s, _ in rows(tmp_path / "b")} == {("live-row", "srv-live")}
    assert servers(links[0]) == {"srv-live"}  # the bundle's server row went with its rows


def test_an_unverifiable_bundle_is_not_imported(tmp_path, bundle):
    tampered = repack(bundle, tmp_path / "t.tgz", lambda n, d: d + b"x" if n.endswith("20250906.sqlite3") else d)
    with pytest.raises(BundleError, match="failed verification"):
        import_bundle(tampered, make_store(tmp_path / "b"))
    assert not list((tmp_path / "b").rglob("ai_proxy_*"))


@pytest.mark.parametrize("damage", ["member", "archive"])
def test_messages_name_the_bundle_by_the_label_given(tmp_path, bundle, damage):
    """A server imports an upload from its own directory: errors name what the client sent."""
    if damage == "member":
        bad = repack(bundle, tmp_path / "upload.part", lambda n, d: d + b"x" if n.startswith("db/") else d)
    else:
        bad = tmp_path / "upload.part"
        bad.write_bytes(bundle.read_bytes()[:100])
    with pytest.raises(BundleError) as failure:
        import_bundle(bad, make_store(tmp_path / "b"), label="nov.tgz")
    assert str(failure.value).startswith("nov.tgz") and "upload.part" not in str(failure.value)


SEED_DDL = """
CREATE TABLE servers (server_id TEXT PRIMARY KEY, hostname TEXT, env TEXT, first_seen_ts INTEGER);
CREATE TABLE requests (request_id TEXT PRIMARY KEY, server_id TEXT NOT NULL, ts INTEGER NOT NULL, endpoint TEXT NOT NULL,
  model_original TEXT, model_mapped TEXT, status_code INTEGER, latency_ms REAL, api_key_hash TEXT,
  request_json TEXT NOT NULL, response_json TEXT NOT NULL, dialog_id TEXT);
INSERT INTO servers VALUES ('srv-seed', 'old-host', 'prod', 1757505600);
INSERT INTO requests VALUES ('seed-row', 'srv-seed', 1757505600, '/v1/chat/completions', 'gpt-4', 'openai/gpt-4', 200,
  1.5, '123', '{"messages": [{"content": "an old seed prompt", "role": "user"}]}', '{"model": "openai/gpt-4"}', 'dlg-seed');
"""


@pytest.mark.parametrize("day_already_held", [False, True])
def test_a_bundle_written_by_the_seed_imports_by_column_name_and_gets_indexed(tmp_path, day_already_held):
    path = tmp_path / "seed.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(SEED_DDL)
    data = path.read_bytes()
    name = "db/2025/09/ai_proxy_20250910.sqlite3"
    meta = {"bundle_id": "ab" * 16, "created_at": "2025-09-11T00:00:00Z", "server_id": "srv-seed", "schema_version": "v1",
            "include_raw": False, "files": [{"path": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}]}
    bundle = write_members(tmp_path / "seed.tgz", [member(name, data), member("metadata.json", orjson.dumps(meta))])
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1, start=datetime(2025, 9, 10, 8, tzinfo=UTC)) \
        if day_already_held else make_store(tmp_path / "b")
    result = import_bundle(bundle, make_store(dest.base))
    assert (result.rows_imported, result.rows_skipped, result.source_server_id) == (1, 0, "srv-seed")
    again = import_bundle(bundle, make_store(dest.base))  # the seed's metadata has no row counts
    assert (again.rows_imported, again.rows_skipped) == (0, 1)
    store = make_store(dest.base)
    (hit,) = search(store, "seed").hits
    assert (hit.fields["request_id"], hit.fields["dialog_id"]) == ("seed-row", "dlg-seed")
    assert servers(dest.base / "2025/09/ai_proxy_20250910.sqlite3") >= {"srv-seed"}
    store.close()


# `logdb bundle import` that holds still once its first partition is staged (and touches the file
# argv[1] then), so a signal is sure to land mid-import. Waiting for target-0.sqlite3 to appear
# and signalling the running import raced with its end: on a busy machine it had often finished.
# Ctrl-C is restored as a terminal has it: a suite started in the background by a shell without
# job control (`make test &` in a script) passes SIGINT on ignored, and the import never saw it.
PAUSED_IMPORT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from aiproxy.logstore.bundles import importer
stage = importer._stage
def paused(store, target, *args):
    stage(store, target, *args)
    if target.staged.name == "target-0.sqlite3":
        Path(sys.argv[1]).touch()
        time.sleep(120)
importer._stage = paused
from aiproxy.entrypoints.logdb import main
raise SystemExit(main(sys.argv[2:]))
"""


def start_paused_import(bundle, dest, tmp_path, **popen) -> subprocess.Popen:
    """The import, paused mid-staging: its first partition staged, the others not yet."""
    paused = tmp_path / "paused"
    process = subprocess.Popen([sys.executable, "-c", PAUSED_IMPORT, str(paused), "bundle", "import", str(bundle),
                                "--dest", str(dest.base)], **popen)
    deadline = time.monotonic() + 60
    while not paused.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the import never reached its pause"
        time.sleep(0.005)
    assert list((dest.base / "incoming").glob("import-*/target-0.sqlite3"))
    return process


def test_an_import_killed_half_way_leaves_the_destination_unchanged_and_a_rerun_completes(tmp_path):
    source = filled_store(tmp_path / "a", days=6, turns=20)
    bundle = create_bundle(source, *SEPTEMBER, tmp_path / "a.tgz").path
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=6, turns=2)  # every day held: the row merge path
    fingerprint = tree_fingerprint(dest.base)
    before = rows(dest.base)
    command = [sys.executable, "-c", "from aiproxy.entrypoints.logdb import main; raise SystemExit(main())",
               "bundle", "import", str(bundle), "--dest", str(dest.base)]
    env = {**os.environ, "LOGDB_SERVER_ID": "srv-b"}
    process = start_paused_import(bundle, dest, tmp_path, env=env)
    process.send_signal(signal.SIGKILL)  # mid-staging: a staged partition is there, the others are not
    process.wait()
    assert {k: v for k, v in tree_fingerprint(dest.base).items() if not k.startswith("incoming")} == fingerprint
    assert rows(dest.base) == before
    assert subprocess.run(command, env=env).returncode == 0  # the rerun also clears the dead run's scratch files
    assert rows(dest.base) == before | rows(tmp_path / "a")
    assert not (dest.base / "incoming").exists()


def test_ctrl_c_mid_import_is_one_line_exit_130_and_a_rerun_completes(tmp_path):
    """SIGINT once ended in a KeyboardInterrupt traceback."""
    source = filled_store(tmp_path / "a", days=6, turns=20)
    bundle = create_bundle(source, *SEPTEMBER, tmp_path / "a.tgz").path
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=6, turns=2)
    fingerprint, before = tree_fingerprint(dest.base), rows(dest.base)
    command = [sys.executable, "-c", "from aiproxy.entrypoints.logdb import main; raise SystemExit(main())",
               "bundle", "import", str(bundle), "--dest", str(dest.base)]
    process = start_paused_import(bundle, dest, tmp_path, stderr=subprocess.PIPE, text=True)
    process.send_signal(signal.SIGINT)
    err = process.communicate()[1]
    assert process.returncode == 130 and "Traceback" not in err and err.startswith("logdb: interrupted"), err
    assert len(err.splitlines()) == 1 and "run the same command again" in err
    assert tree_fingerprint(dest.base) == fingerprint and rows(dest.base) == before  # scratch files removed too
    assert subprocess.run(command).returncode == 0
    assert rows(dest.base) == before | rows(tmp_path / "a")


@pytest.mark.parametrize("spare_kib", [-40, 8, 40])  # short of a member (staging), of a staged file, of the merge
def test_a_file_size_limit_is_a_failed_operation_in_one_line_and_a_rerun_completes(tmp_path, bundle, spare_kib):
    """A real write failure (RLIMIT_FSIZE, as `ulimit -f`) in each phase: once reported as a
    corrupt archive (exit 2) while staging, and as a traceback (peewee's failed ROLLBACK hiding
    SQLite's error) while building or merging rows."""
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=3, topic="gardening")  # the merge path
    fingerprint, before = tree_fingerprint(dest.base), rows(dest.base)
    limit = max(p.stat().st_size for p in (tmp_path / "a").rglob("ai_proxy_*.sqlite3")) + spare_kib * 1024
    command = [sys.executable, "-c", "from aiproxy.entrypoints.logdb import main; raise SystemExit(main())",
               "bundle", "import", str(bundle), "--dest", str(dest.base)]
    failed = subprocess.run(command, capture_output=True, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert failed.returncode == 1, failed.stderr
    assert len(failed.stderr.splitlines()) == 1 and "nothing imported" in failed.stderr, failed.stderr
    assert "incoming" not in failed.stderr and "run the import again" in failed.stderr
    assert {k: v for k, v in tree_fingerprint(dest.base).items() if not k.startswith("incoming")} == fingerprint
    assert rows(dest.base) == before
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert rows(dest.base) == before | rows(tmp_path / "a")


def test_a_concurrent_import_of_the_same_bundle_is_counted_once(tmp_path, bundle, monkeypatch):
    """The second import staged rows the first then committed: it reported partitions=3 with
    rows_imported=0."""
    from aiproxy.logstore.bundles import importer

    stage, raced = importer._stage, []

    def stage_then_race(store, target, source_server_id):
        stage(store, target, source_server_id)
        if not raced:  # once, before the outer import commits
            raced.append(None)
            raced[0] = import_bundle(bundle, make_store(store.base))

    monkeypatch.setattr(importer, "_stage", stage_then_race)
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=3)  # every day held: both merge
    second = import_bundle(bundle, make_store(dest.base))
    assert (raced[0].rows_imported, raced[0].partitions) == (9, 3)
    assert (second.rows_imported, second.rows_skipped, second.partitions) == (0, 9, 0)
    assert rows(dest.base) == rows(tmp_path / "a") | {r for r in rows(dest.base) if r[1] == "srv-b"}
    assert len(rows(dest.base)) == 18


def _edit_member(tmp_path, day: str, change):
    """repack() editor: run `change(conn)` on the member of `day` (YYYYMMDD)."""
    def edit(name, data):
        if not name.endswith(f"{day}.sqlite3"):
            return data
        path = tmp_path / f"edit-{day}.sqlite3"
        path.write_bytes(data)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            change(conn)
            conn.commit()
        return path.read_bytes()
    return edit


def _damage_pages(name, data):
    """Overwrite the header of every other page after the schema page: sums fixed, pages broken."""
    if not name.endswith("20250905.sqlite3"):
        return data
    page = int.from_bytes(data[16:18], "big")
    broken = bytearray(data)
    for start in range(page, len(data), 2 * page):
        broken[start:start + 8] = b"\xff" * 8
    return bytes(broken)


@pytest.mark.parametrize("day_already_held", [False, True])
def test_a_member_with_damaged_pages_is_refused_and_the_destination_unchanged(tmp_path, bundle, capsys,
                                                                                day_already_held):
    damaged = repack(bundle, tmp_path / "damaged.tgz", _damage_pages, fix_metadata=True)
    assert main(["bundle", "verify", str(damaged)]) == 0  # the archive itself is consistent
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1) if day_already_held else make_store(tmp_path / "b")
    fingerprint = tree_fingerprint(dest.base)
    dest.close()
    assert main(["bundle", "import", str(damaged), "--dest", str(dest.base)]) == 1
    assert "damaged database pages" in capsys.readouterr().err
    assert tree_fingerprint(dest.base) == fingerprint


def _schema_not_utf8(name, data):
    """The servers table's CREATE statement with a byte that is not UTF-8, as a flipped bit makes it."""
    if not name.endswith("20250905.sqlite3"):
        return data
    statement = data.index(b'CREATE TABLE "servers"')
    return data[:statement + 6] + b"\xaf" + data[statement + 7:]


def test_a_member_whose_schema_is_not_utf8_is_refused_in_one_line(tmp_path, bundle, capsys):
    """SQLite's "malformed database schema" message quoted the bad byte and Python could not decode
    it: a traceback (UnicodeDecodeError) instead of a bad bundle."""
    broken = repack(bundle, tmp_path / "broken.tgz", _schema_not_utf8, fix_metadata=True)
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1)
    fingerprint = tree_fingerprint(dest.base)
    dest.close()
    assert main(["bundle", "import", str(broken), "--dest", str(dest.base)]) == 1
    err = capsys.readouterr().err
    assert "db/2025/09/ai_proxy_20250905.sqlite3 is not a usable log database" in err and len(err.splitlines()) == 1
    assert tree_fingerprint(dest.base) == fingerprint


def _damage_index(conn):
    conn.execute("UPDATE request_text_index_data SET block = zeroblob(length(block)) WHERE id > 1000")


@pytest.mark.parametrize("day_already_held", [False, True])
def test_a_member_with_a_damaged_full_text_index_is_refused(tmp_path, bundle, capsys, day_already_held):
    """quick_check reads no FTS5 structure: the member was adopted and every later search of its
    days failed with "database disk image is malformed" (or, with the day held, its damaged
    fragments were copied)."""
    damaged = repack(bundle, tmp_path / "damaged.tgz", _edit_member(tmp_path, "20250905", _damage_index),
                     fix_metadata=True)
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1) if day_already_held else make_store(tmp_path / "b")
    fingerprint = tree_fingerprint(dest.base)
    dest.close()
    assert main(["bundle", "import", str(damaged), "--dest", str(dest.base)]) == 1
    err = capsys.readouterr().err
    assert "ai_proxy_20250905.sqlite3 cannot be imported: damaged full-text index" in err
    assert tree_fingerprint(dest.base) == fingerprint


def test_a_member_lacking_the_schemas_columns_is_refused(tmp_path, bundle, capsys):
    def strip(conn):
        conn.execute("ALTER TABLE requests DROP COLUMN finish_reason")
    broken = repack(bundle, tmp_path / "broken.tgz", _edit_member(tmp_path, "20250906", strip), fix_metadata=True)
    assert main(["bundle", "import", str(broken), "--dest", str(tmp_path / "b")]) == 1
    assert "lacks the log schema's columns finish_reason" in capsys.readouterr().err
    assert not list((tmp_path / "b").rglob("ai_proxy_*"))


_UNDATED = "CREATE TABLE r AS SELECT * FROM requests; DROP TABLE requests; ALTER TABLE r RENAME TO requests;"


@pytest.mark.parametrize(("sql", "expected"), [
    ("DROP TABLE request_text_index; CREATE TABLE request_text_index (x);", "lacks the full-text index's columns"),
    ("UPDATE requests SET ts = 99999999999999 WHERE rowid = 1", "1 of its rows have no valid ts"),
    ("UPDATE requests SET ts = -99999999999999 WHERE rowid = 1", "1 of its rows have no valid ts"),
    ("UPDATE requests SET ts = 'soon' WHERE rowid = 1", "1 of its rows have no valid ts"),
    (_UNDATED + "UPDATE requests SET ts = NULL", "3 of its rows have no valid ts"),
])
def test_a_member_with_a_hostile_schema_or_undated_rows_is_refused_in_one_line(tmp_path, bundle, capsys, sql,
                                                                                 expected):
    """Once a traceback (an FTS table without its columns, a ts no UTC day has) or rows silently
    skipped (a text ts): a consistent but forged member is a bad bundle, the destination untouched."""
    forged = repack(bundle, tmp_path / "forged.tgz",
                    _edit_member(tmp_path, "20250906", lambda conn: conn.executescript(sql)), fix_metadata=True)
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1)
    fingerprint = tree_fingerprint(dest.base)
    assert main(["bundle", "import", str(forged), "--dest", str(dest.base)]) == 1
    err = capsys.readouterr().err
    assert "db/2025/09/ai_proxy_20250906.sqlite3 cannot be imported" in err and expected in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert tree_fingerprint(dest.base) == fingerprint


_NOT_UTF8 = "CAST(X'67ff' AS TEXT)"  # "g" and a byte no UTF-8 text holds, as a flipped bit leaves it


@pytest.mark.parametrize(("day", "sql"), [
    ("20250905", f"UPDATE requests SET model_original = {_NOT_UTF8} WHERE rowid = 2"),
    ("20250906", f"UPDATE requests SET model_original = {_NOT_UTF8} WHERE rowid = 2"),
    ("20250906", f"UPDATE requests SET response_json = {_NOT_UTF8} WHERE rowid = 1"),
    ("20250905", f"UPDATE servers SET hostname = {_NOT_UTF8}"),
    ("20250906", f"UPDATE request_text_index SET content = {_NOT_UTF8} WHERE rowid = 1"),
])
def test_text_that_is_not_utf8_is_imported_and_read_with_replacement_characters(tmp_path, bundle, capsys, day, sql):
    """SQLite stores whatever bytes a TEXT value is given: a member (sums recomputed, or packed from a
    store with a byte flipped on disk) holding one that is not UTF-8 was imported, and from then on
    every `logdb search` of the store ended in a traceback ("Could not decode to UTF-8 column
    'model_original'"). Its day is held in the destination (rows copied) or not (the member
    adopted): every row arrives, and the byte reads as U+FFFD."""
    forged = repack(bundle, tmp_path / "forged.tgz", _edit_member(tmp_path, day, lambda conn: conn.execute(sql)),
                    fix_metadata=True)
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1)
    assert main(["bundle", "import", str(forged), "--dest", str(dest.base)]) == 0
    assert len(rows(dest.base)) == len(rows(tmp_path / "a")) + 3
    capsys.readouterr()
    models, ids = set(), set()
    for query in ([], ["sailing"], ["question"], ["g"]):
        assert main(["search", *query, "--out", str(dest.base), "--limit", "100", "--json"]) == 0
        out = capsys.readouterr()
        found = orjson.loads(out.out)["results"]
        assert (found or query == ["g"]) and not out.err
        models |= {hit["model_original"] for hit in found}
        ids |= {hit["request_id"] for hit in found}
    assert len(ids) == len(rows(dest.base))
    for request_id in ids:  # every column of every row, as JSON and as text
        for as_json in ([], ["--json"]):
            assert main(["show", request_id, "--out", str(dest.base), *as_json]) == 0
            assert not capsys.readouterr().err
    assert main(["dialogs", "list", "--out", str(dest.base), "--json"]) == 0
    assert not capsys.readouterr().err
    if "model_original" in sql:
        assert "g\N{REPLACEMENT CHARACTER}" in models


def test_objects_a_member_carries_never_reach_the_store(tmp_path, bundle):
    """A trigger in a member would run on every later insert into the partition: such a member's
    rows are copied into a file the store creates, not adopted."""
    def booby_trap(conn):
        conn.execute("CREATE TRIGGER wipe AFTER INSERT ON requests BEGIN DELETE FROM requests"
                     " WHERE rowid <> NEW.rowid; END")
        conn.execute("CREATE VIEW everything AS SELECT * FROM requests")
    trapped = repack(bundle, tmp_path / "trapped.tgz", _edit_member(tmp_path, "20250906", booby_trap),
                     fix_metadata=True)
    store = make_store(tmp_path / "b")
    result = import_bundle(trapped, store)
    assert result.rows_imported == len(rows(tmp_path / "a")) and result.rows_skipped == 0
    partitions = sorted((tmp_path / "b").rglob("ai_proxy_*.sqlite3"))
    assert len(partitions) == 3
    for path in partitions:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT name FROM sqlite_master WHERE type IN ('trigger', 'view')").fetchall() == []
    assert rows(tmp_path / "b") == rows(tmp_path / "a")
    assert len(search(store, "", limit=500).hits) == result.rows_imported
    store.close()


_MANY = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 100000)"


def _requests_view(conn):
    """`requests` replaced by a view yielding 100,000 rows from nothing (LIMIT can be 10**12)."""
    columns = [r[1] for r in conn.execute('PRAGMA table_info("requests")')]
    values = {"request_id": "'forged-' || x", "server_id": "'srv-x'", "ts": "1757073600", "request_json": "'{}'",
              "response_json": "'{}'", "endpoint": "'/v1/chat/completions'"}
    select = ", ".join(f"{values.get(c, 'NULL')} AS {c}" for c in columns)
    conn.executescript(f"DROP TABLE requests; CREATE VIEW requests AS {_MANY} SELECT {select} FROM n;")


def _servers_view(conn):
    conn.executescript(f"DROP TABLE servers; CREATE VIEW servers AS {_MANY} SELECT 'srv-' || x AS server_id,"
                       " NULL AS first_seen_ts FROM n;")


def test_a_view_posing_as_a_table_cannot_pour_rows_into_the_store(tmp_path, bundle, capsys):
    """A 1 KB member whose `requests` (or `servers`) is a view over a recursive CTE imported every
    row it generated: unbounded disk from a tiny bundle. A member's views and triggers are dropped
    before it is read; without its table the member is refused, the destination untouched."""
    dest = filled_store(tmp_path / "b", server_id="srv-b", days=1)
    fingerprint = tree_fingerprint(dest.base)
    forged = repack(bundle, tmp_path / "forged.tgz", _edit_member(tmp_path, "20250906", _requests_view),
                    fix_metadata=True)
    assert main(["bundle", "import", str(forged), "--dest", str(dest.base)]) == 1
    assert "ai_proxy_20250906.sqlite3 cannot be imported: it has no requests table" in capsys.readouterr().err
    assert tree_fingerprint(dest.base) == fingerprint
    forged = repack(bundle, tmp_path / "servers.tgz", _edit_member(tmp_path, "20250906", _servers_view),
                    fix_metadata=True)
    assert import_bundle(forged, dest).rows_imported == len(rows(tmp_path / "a"))
    assert {s for p in dest.base.rglob("ai_proxy_*.sqlite3") for s in servers(p)} <= {"srv-a", "srv-b"}
    dest.close()


def test_a_seed_weekly_bundle_imports_its_repeated_member_once(tmp_path, seed_weekly_bundle):
    """The seed archived a weekly partition once per day: seven identical copies are one member."""
    store = make_store(tmp_path / "b")
    result = import_bundle(seed_weekly_bundle, store)
    assert (result.rows_imported, result.rows_skipped, result.source_server_id) == (9, 0, "srv-w")
    assert rows(tmp_path / "b") == rows(tmp_path / "w")
    assert import_bundle(seed_weekly_bundle, store).rows_imported == 0
    store.close()


def test_a_member_that_would_fill_the_disk_is_refused_before_it_is_written(tmp_path, bundle, monkeypatch):
    """A few MB of gzip can declare gigabytes of partition: the tar header's size is checked
    against the free space of the staging disk before anything is unpacked."""
    free = verify.MAX_SPARE_BYTES + 1000  # less than any member of the bundle
    monkeypatch.setattr(verify.shutil, "disk_usage", lambda path: SimpleNamespace(free=free, total=10**12))
    with pytest.raises(NoSpace, match="free some space on that disk") as failure:
        import_bundle(bundle, make_store(tmp_path / "b"))
    assert failure.value.exit_code == 1 and "incoming" not in str(failure.value) and "the store's disk" in str(failure.value)
    assert not list((tmp_path / "b").rglob("*.sqlite3"))


def test_a_small_disk_keeps_a_proportional_spare(tmp_path, bundle, monkeypatch):
    """A 200 MiB volume with the bundle's worth of room: 5 % of it stays free, not 256 MiB."""
    total = 200 * 1024 * 1024
    monkeypatch.setattr(verify.shutil, "disk_usage", lambda path: SimpleNamespace(free=total // 2, total=total))
    assert import_bundle(bundle, make_store(tmp_path / "b")).rows_imported == 9
    assert verify.spare_bytes(total) == total // 20 and verify.spare_bytes(10**12) == verify.MAX_SPARE_BYTES


def _one_row_a_day(days):
    """repack() editor: the member of 2025-09-06 gets `days` more rows, one per day from 1970 on."""
    def spread(conn):
        conn.execute("DROP TABLE request_text_index")
        columns = [r[1] for r in conn.execute('PRAGMA table_info("requests")')]
        select = ", ".join({"request_id": "'day-' || x", "ts": "x * 86400"}.get(c, c) for c in columns)
        conn.execute(f"INSERT INTO requests ({', '.join(columns)}) WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL"
                     f" SELECT x + 1 FROM n LIMIT {days}) SELECT {select} FROM n, (SELECT * FROM requests LIMIT 1)")
    return spread


def test_rows_spread_over_many_days_cannot_fill_the_disk(tmp_path, bundle, monkeypatch, capsys):
    """Each day a member's rows touch is a partition file of ~88 KiB: a 66 KB bundle with a row on
    each of 1,000 days made 87 MB of partitions, past any free-space check (the members are small).
    Staging stops where the disk's spare begins; nothing is imported."""
    spread = repack(bundle, tmp_path / "spread.tgz", _edit_member(tmp_path, "20250906", _one_row_a_day(120)),
                    fix_metadata=True)
    dest = make_store(tmp_path / "b")
    budget = verify.MAX_SPARE_BYTES + 3 * 1024 * 1024  # room for ~30 partitions, not 120

    def disk_usage(path):
        used = sum(p.stat().st_size for p in (tmp_path / "b").rglob("*") if p.is_file())
        return SimpleNamespace(free=budget - used, total=10**12)

    monkeypatch.setattr(verify.shutil, "disk_usage", disk_usage)
    assert main(["bundle", "import", str(spread), "--dest", str(dest.base)]) == 1
    assert "staging partition ai_proxy_" in capsys.readouterr().err
    assert not list(dest.base.rglob("ai_proxy_*.sqlite3"))
    dest.close()


def test_a_full_disk_is_exit_1_with_one_line(tmp_path, bundle, monkeypatch, capsys):
    monkeypatch.setattr(verify.shutil, "disk_usage", lambda path: SimpleNamespace(free=4096, total=10**9))
    assert main(["bundle", "import", str(bundle), "--dest", str(tmp_path / "b")]) == 1
    assert "the store's disk has 4,096 bytes free" in capsys.readouterr().err


def test_after_a_granularity_change_a_reimport_adds_nothing(tmp_path, bundle):
    """A weekly store switched to daily: the weekly files still hold the days, so the daily
    partitions the import would create get none of their rows again."""
    weekly = make_store(tmp_path / "b", partition_granularity="weekly")
    first = import_bundle(bundle, weekly)
    weekly.close()
    daily = make_store(tmp_path / "b", partition_granularity="daily")
    again = import_bundle(bundle, daily)
    assert (again.rows_imported, again.rows_skipped) == (0, first.rows_imported)
    assert rows(tmp_path / "b") == rows(tmp_path / "a")
    assert len(search(daily, "", limit=500).hits) == first.rows_imported
    daily.close()


def test_a_member_with_a_constraint_of_its_own_is_copied_not_adopted(tmp_path, bundle):
    """Same tables and columns, but a CHECK that would refuse every later insert of this store."""
    def constrain(conn):
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'servers'").fetchone()[0]
        conn.executescript(
            "PRAGMA writable_schema = ON;"
            f"UPDATE sqlite_master SET sql = '{sql[:-1]}, CHECK (server_id = ''srv-a''))' WHERE name = 'servers';"
            "PRAGMA writable_schema = OFF;"
        )
    trapped = repack(bundle, tmp_path / "checked.tgz", _edit_member(tmp_path, "20250906", constrain), fix_metadata=True)
    store = make_store(tmp_path / "b")
    import_bundle(trapped, store)
    with contextlib.closing(sqlite3.connect(tmp_path / "b/2025/09/ai_proxy_20250906.sqlite3")) as conn:
        assert "CHECK" not in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'servers'").fetchone()[0]
        conn.execute("INSERT INTO servers (server_id) VALUES ('srv-b')")  # this store's own server
    assert rows(tmp_path / "b") == rows(tmp_path / "a")
    store.close()


def test_a_destination_that_cannot_be_created_is_one_line_naming_it(tmp_path, bundle, capsys):
    """It was Python's `[Errno 20] Not a directory: '…'`, where every other logdb command says
    `<path>: <reason>`."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["bundle", "import", str(bundle), "--dest", str(blocker / "db")]) == 1
    assert capsys.readouterr().err == f"logdb: {blocker / 'db' / 'incoming'}: Not a directory\n"


@pytest.mark.parametrize(("question", "word"), [
    ("我们今天讨论数据库的性能问题", "数据库"),
    ("วันนี้เราคุยเรื่องฐานข้อมูลและประสิทธิภาพ", "ฐานข้อมูล"),
], ids=["chinese", "thai"])
def test_a_bundle_whose_unspaced_text_an_earlier_version_indexed_is_indexed_anew(tmp_path, question, word):
    """Earlier versions indexed a run of Chinese (or Thai...) as one token: its words were not found.
    Such a bundle's members are indexed as this version indexes, whether they become partitions or are copied."""
    records = [chat_record([{"role": "user", "content": question}], "ok", ts=datetime(2025, 9, 5, 10, tzinfo=UTC))]
    write_jsonl(tmp_path / "logs" / "r.jsonl", records)
    source = make_store(tmp_path / "a")
    ingest(source, tmp_path / "logs")
    source.close()
    index_as_earlier_versions_did(tmp_path / "a")
    bundle = create_bundle(make_store(tmp_path / "a"), *SEPTEMBER, tmp_path / "a.tgz").path
    for dest in (make_store(tmp_path / "new"), filled_store(tmp_path / "held", days=6)):  # adopted; copied
        assert main(["bundle", "import", str(bundle), "--dest", str(dest.base)]) == 0
        store = make_store(dest.base)
        page = search(store, word)
        assert [h.snippet for h in page.hits] == [question.replace(word, f"[{word}]")] and not page.unsplit
        store.close()


@pytest.mark.parametrize("day_already_held", [False, True])
def test_rows_ingest_stored_before_1970_travel_in_a_bundle(tmp_path, day_already_held):
    """Ingest stores a record of any year (a clock set wrong, an offset taking 1970-01-01 back to
    1969); a bundle of such a store was refused ("no valid ts"), and SQLite's division rounding
    towards zero would have put 1969-12-31 in 1970-01-01's partition and dropped its rows."""
    moments = [datetime(1969, 12, 31, 12, tzinfo=UTC), datetime(1965, 3, 1, 23, 59, 59, tzinfo=UTC),
               datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)]
    write_jsonl(tmp_path / "logs" / "old.jsonl", [chat_record([{"role": "user", "content": f"clock {i}"}], "a",
                                                              ts=moment, server_id="srv-old")
                                                  for i, moment in enumerate(moments)], mode="wb")
    source = make_store(tmp_path / "a")
    assert ingest(source, tmp_path / "logs").rows_inserted == 3
    archive = create_bundle(source, date(1965, 1, 1), date(1970, 12, 31), tmp_path / "old.tgz").path
    source.close()
    dest = make_store(tmp_path / "b")
    if day_already_held:
        write_jsonl(tmp_path / "held" / "r.jsonl", [chat_record([{"role": "user", "content": "x"}], "b",
                                                                ts=datetime(1969, 12, 31, 1, tzinfo=UTC))], mode="wb")
        ingest(dest, tmp_path / "held")
    assert import_bundle(archive, dest).rows_imported == 3
    dest.close()
    partitions = list((tmp_path / "a").rglob("ai_proxy_*.sqlite3"))
    assert len(partitions) == 3  # 1965-03-01, 1969-12-31, 1970-01-01
    for path in partitions:  # each row in the partition of its own day
        assert _ids(path) <= _ids(tmp_path / "b" / path.relative_to(tmp_path / "a"))


def _ids(path):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return set(conn.execute("SELECT request_id, server_id FROM requests"))
