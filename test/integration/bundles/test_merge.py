"""`logdb merge` (issue 5): partition files only, never the control DB, an earlier merge output,
the destination or bundle staging files;
columns by name across schema versions; FTS built; counts and integrity printed."""

import sqlite3

import pytest

from aiproxy.entrypoints.logdb import main
from aiproxy.testing.bundles import filled_store

SEED_FILE_DDL = """
CREATE TABLE requests (request_id TEXT PRIMARY KEY, server_id TEXT NOT NULL, ts INTEGER NOT NULL, endpoint TEXT NOT NULL,
  model_original TEXT, model_mapped TEXT, status_code INTEGER, latency_ms REAL, api_key_hash TEXT,
  request_json TEXT NOT NULL, response_json TEXT NOT NULL, dialog_id TEXT);
INSERT INTO requests VALUES ('seed-row', 'srv-seed', 1757505600, '/v1/chat/completions', 'gpt-4', 'openai/gpt-4', 200,
  1.5, '123', '{"messages": [{"content": "an old seed prompt", "role": "user"}]}', '{"model": "openai/gpt-4"}', 'dlg-x');
"""


def test_merge_takes_partitions_only_by_column_name_and_indexes_them(tmp_path, capsys):
    store = filled_store(tmp_path / "db", days=2)
    seed = tmp_path / "db/2025/09/ai_proxy_20250910.sqlite3"
    with sqlite3.connect(seed) as conn:
        conn.executescript(SEED_FILE_DDL)
    staging = tmp_path / "db/incoming/import-x/target-0.sqlite3"
    staging.parent.mkdir(parents=True)
    staging.write_bytes(store.existing()[0].path.read_bytes())
    dest = tmp_path / "db/merged.sqlite3"
    for _ in range(2):  # the second run finds the merged file below --from and must skip it
        assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(dest)]) == 0
        assert capsys.readouterr().out.strip() == "sources=3 total_requests=7 integrity=ok"
    with sqlite3.connect(dest) as conn:
        assert conn.execute("SELECT dialog_id FROM requests WHERE request_id = 'seed-row'").fetchone() == ("dlg-x",)
        assert conn.execute("SELECT COUNT(*) FROM request_text_index WHERE request_text_index MATCH 'seed'").fetchone()[0]


@pytest.mark.parametrize("earlier", ["all.sqlite3", "ai_proxy_all.sqlite3"])
def test_an_earlier_merge_output_below_from_is_not_a_partition(tmp_path, capsys, earlier):
    filled_store(tmp_path / "db", days=2)
    assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(tmp_path / "db" / earlier)]) == 0
    capsys.readouterr()
    assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(tmp_path / "elsewhere.sqlite3")]) == 0
    assert capsys.readouterr().out.strip() == "sources=2 total_requests=6 integrity=ok"


def test_a_source_or_target_sqlite_cannot_use_is_one_line_naming_it(tmp_path, capsys):
    """A file named like a partition that is not a database, or a --to that cannot be a
    database file, ended in a peewee traceback."""
    filled_store(tmp_path / "db", days=1)
    bad = tmp_path / "db/2025/09/ai_proxy_20250920.sqlite3"
    bad.write_bytes(b"not a database at all\n" * 100)
    assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(tmp_path / "all.sqlite3")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"logdb: {bad}: file is not a database") and len(err.splitlines()) == 1
    bad.unlink()
    (tmp_path / "out").mkdir()
    assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"logdb: {tmp_path / 'out'}: unable to open database file") and len(err.splitlines()) == 1


def test_a_source_whose_schema_is_not_utf8_is_one_line_naming_it(tmp_path, capsys):
    """SQLite's "malformed database schema" message quoted the damaged byte, which Python could not
    decode: a UnicodeDecodeError traceback instead of the line naming the file."""
    store = filled_store(tmp_path / "db", days=1)
    source = store.existing()[0].path
    data = source.read_bytes()
    statement = data.index(b'CREATE TABLE "servers"')
    source.write_bytes(data[:statement + 6] + b"\xaf" + data[statement + 7:])
    assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(tmp_path / "all.sqlite3")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"logdb: {source}: malformed database schema") and len(err.splitlines()) == 1


def test_a_target_another_process_has_open_is_not_replaced(tmp_path, capsys):
    """The merged file is renamed over the target: a -wal of another connection's beside it would
    be applied to the new file by SQLite, so the merge stops, naming the target, and leaves it."""
    filled_store(tmp_path / "db", days=1)
    dest = tmp_path / "all.sqlite3"
    assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(dest)]) == 0
    capsys.readouterr()
    other = sqlite3.connect(dest)
    other.execute("PRAGMA wal_autocheckpoint = 0")
    other.execute("DELETE FROM requests")
    other.commit()  # only in the -wal while `other` is open
    try:
        assert main(["merge", "--from", str(tmp_path / "db"), "--to", str(dest)]) == 1
        assert capsys.readouterr().err == (f"logdb: {dest}: in use by another process (all.sqlite3-wal is there):"
                                           " close it, then merge again; the target was not changed\n")
        assert other.execute("SELECT COUNT(*) FROM requests").fetchone() == (0,)
    finally:
        other.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
