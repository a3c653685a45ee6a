"""`bundle create`: consistent snapshots of live WAL files, metadata, atomic output, raw logs."""

import json
import sqlite3
import tarfile
import uuid
from datetime import UTC, date, datetime

import orjson

from aiproxy.entrypoints.logdb import main
from aiproxy.logstore import stoppable
from aiproxy.logstore.bundles.create import bundle_name, create_bundle
from aiproxy.testing.bundles import filled_store, read_members
from aiproxy.testing.logrecords import make_store

SEPTEMBER = (date(2025, 9, 1), date(2025, 9, 30))


def test_metadata_describes_every_member(bundle):
    members = dict((i.name, d) for i, d in read_members(bundle))
    meta = orjson.loads(members.pop("metadata.json"))
    assert meta["format"] == "aiproxy.logbundle.v1" and meta["server_id"] == "srv-a" and meta["schema_version"] == 1
    assert str(uuid.UUID(meta["bundle_id"], version=4)) == meta["bundle_id"]  # a UUID4, as docs/bundles.md says
    assert meta["created_at"].endswith("Z")
    assert (meta["since"], meta["to"], meta["rows"]) == ("2025-09-01", "2025-09-30", 9)
    assert sorted(members) == sorted(f["path"] for f in meta["files"]) == [
        f"db/2025/09/ai_proxy_202509{d:02d}.sqlite3" for d in (5, 6, 7)
    ]
    assert all(f["rows"] == 3 and f["bytes"] == len(members[f["path"]]) for f in meta["files"])
    assert list(members)[-1:] != ["metadata.json"]  # metadata.json comes last, as in the seed


def test_a_live_wal_database_is_archived_consistently(tmp_path):
    store = filled_store(tmp_path / "a", days=1)
    path = store.existing()[0].path
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA wal_autocheckpoint = 0")  # committed rows stay in the WAL only
    writer.execute("INSERT INTO requests (request_id, server_id, ts, endpoint, request_json, response_json)"
                   " SELECT request_id || '-copy', server_id, ts, endpoint, request_json, response_json FROM requests")
    writer.commit()
    assert (path.parent / (path.name + "-wal")).stat().st_size > 0
    result = create_bundle(store, *SEPTEMBER, tmp_path / "live.tgz")
    writer.close()
    assert result.rows == 6  # a copy of the main file alone would hold 3
    member = tmp_path / "member.sqlite3"
    member.write_bytes(dict((i.name, d) for i, d in read_members(result.path))["db/2025/09/ai_proxy_20250905.sqlite3"])
    with sqlite3.connect(member) as conn:
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 6
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_partition_written_while_it_is_copied_is_archived_as_the_copy_began(tmp_path, monkeypatch):
    """The copy goes in steps (a stop acts between them). Without one read transaction across them,
    SQLite starts the copy over at each commit of another connection: a partition the gateway
    ingests into every second could be copied for ever, or hold rows committed during the copy."""
    store = filled_store(tmp_path / "a", days=1)
    path = store.existing()[0].path
    writer = sqlite3.connect(path)
    steps = []

    def commit_a_row_between_steps():
        steps.append(1)
        if len(steps) <= 20:
            writer.execute("INSERT INTO requests (request_id, server_id, ts, endpoint, request_json, response_json)"
                           " SELECT ?, server_id, ts, endpoint, request_json, response_json FROM requests LIMIT 1",
                           (f"during-{len(steps)}",))
            writer.commit()

    monkeypatch.setattr(stoppable, "BACKUP_STEP_PAGES", 1)
    monkeypatch.setattr(stoppable, "refuse_if_stopped", commit_a_row_between_steps)
    result = create_bundle(store, *SEPTEMBER, tmp_path / "live.tgz")
    writer.close()
    pages = len(dict((i.name, d) for i, d in read_members(result.path))["db/2025/09/ai_proxy_20250905.sqlite3"]) // 4096
    assert result.rows == 3 and len(steps) == pages >= 20, (result.rows, len(steps), pages)


def test_out_directory_gets_a_generated_name_and_no_temporary_files_remain(tmp_path, source_store, capsys, monkeypatch):
    monkeypatch.setenv("LOGDB_SERVER_ID", "srv-a")
    out = tmp_path / "backups"
    out.mkdir()
    args = ["bundle", "create", "--since", "2025-09-06", "--to", "2025-09-06", "--out", f"{out}/", "--db",
            str(source_store.base)]
    assert main(args) == 0
    summary = capsys.readouterr().out
    (archive,) = out.iterdir()
    assert archive.name.startswith("logs_srv-a_20250906-20250906_") and archive.suffix == ".tgz"
    assert f"{archive} files=1 rows=3 " in summary and "mb_per_s=" in summary
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_include_raw_adds_the_request_logs(tmp_path, source_store):
    raw_dir = tmp_path / "a-logs"
    result = create_bundle(make_store(source_store.base), date(2000, 1, 1), date(2100, 1, 1), tmp_path / "r.tgz",
                           raw_dir=raw_dir)
    with tarfile.open(result.path) as tar:
        names = tar.getnames()
    assert "raw/requests.jsonl" in names and len([n for n in names if n.startswith("db/")]) == 3


def test_an_empty_range_makes_an_empty_but_valid_bundle(tmp_path, source_store, capsys):
    out = tmp_path / "empty.tgz"
    assert main(["bundle", "create", "--since", "2024-01-01", "--to", "2024-01-02", "--out", str(out),
                 "--db", str(source_store.base)]) == 0
    assert main(["bundle", "verify", str(out)]) == 0
    assert main(["bundle", "create", "--since", "2024-01-02", "--to", "2024-01-01", "--out", str(out),
                 "--db", str(source_store.base)]) == 2  # a usage error
    assert "is after" in capsys.readouterr().err


def test_bundles_created_in_the_same_second_get_different_names(tmp_path, source_store):
    (tmp_path / "out").mkdir()
    first, second = (create_bundle(source_store, *SEPTEMBER, f"{tmp_path}/out/").path for _ in range(2))
    assert first != second and sorted((tmp_path / "out").iterdir()) == sorted([first, second])


def test_bundle_names_pad_years_to_four_digits():
    name = bundle_name("srv", date(1, 1, 1), date(2025, 9, 30), datetime(2025, 10, 1, tzinfo=UTC), "0123abcd-ef")
    assert name == "logs_srv_00010101-20250930_20251001T000000Z_0123abcd.tgz"


def test_include_raw_from_a_directory_that_is_not_there_is_an_error_not_a_bundle_without_logs(
        tmp_path, source_store, capsys):
    """A mistyped --raw gave exit 0 and a bundle saying include_raw with no raw log in it; a
    file gave a member named `raw/.`."""
    (tmp_path / "a-file.jsonl").write_text("{}\n")
    for raw in (tmp_path / "no-such-logs", tmp_path / "a-file.jsonl"):
        out = tmp_path / "r.tgz"
        assert main(["bundle", "create", "--since", "2025-09-01", "--to", "2025-09-30", "--out", str(out),
                     "--db", str(source_store.base), "--include-raw", "--raw", str(raw)]) == 2
        assert f"{raw}: no such log directory" in capsys.readouterr().err and not out.exists()
