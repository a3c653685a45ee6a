"""A damaged partition file (truncated, zero-filled, not a database, damaged pages, emptied, one
SQLite cannot open, no permission) in a store of three days, through every `logdb` command: the
bad day is named in one line, the other days are still read or processed, the exit code says so
(1), and the damaged file is never changed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiproxy.entrypoints.logdb import main
from aiproxy.logstore import partitions, queries
from aiproxy.testing.bundles import DAMAGES, T0, damage_partition, filled_store
from aiproxy.testing.logrecords import conversation, make_store, write_jsonl

BAD_DAY = "2025-09-06"  # the middle one of filled_store's 2025-09-05 .. 2025-09-07
KINDS = [pytest.param(kind, marks=pytest.mark.skipif(kind == "no_permission" and os.geteuid() == 0,
                                                      reason="root reads a file without permissions"))
         for kind in DAMAGES]


def _fingerprint(path: Path) -> tuple:
    if path.is_dir():
        return ("dir", sorted(p.name for p in path.iterdir()))
    mode = path.stat().st_mode
    try:
        return (mode, hashlib.sha256(path.read_bytes()).hexdigest())
    except PermissionError:
        return (mode, "unreadable")


class Damaged:
    """A store of three days with the middle day's partition damaged `kind`-wise; the ids of a
    request and a dialog of a good day and of the bad day, read before the damage."""

    def __init__(self, tmp_path: Path, kind: str) -> None:
        self.base = tmp_path / "db"
        filled_store(self.base, days=3, turns=3)
        store = make_store(self.base, server_id="srv-a")
        by_day: dict[str, dict] = {}
        for part in partitions.discover(self.base):
            with store.connected(part.path) as db:
                request_id, dialog_id = db.execute_sql("SELECT request_id, dialog_id FROM requests LIMIT 1").fetchone()
            by_day[str(part.first_day)] = {"request": request_id, "dialog": dialog_id, "path": part.path}
        store.close()
        self.good, self.bad = by_day["2025-09-05"], by_day[BAD_DAY]
        self.paths = sorted(str(p["path"]) for p in by_day.values())
        self.bad_path = self.bad["path"]
        self.original = self.bad_path.read_bytes()
        damage_partition(self.bad_path, kind)
        self.print = _fingerprint(self.bad_path)

    def run(self, capsys, *argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--db", str(self.base)])
        out = capsys.readouterr()
        return code, out.out, out.err

    def untouched(self) -> bool:
        return _fingerprint(self.bad_path) == self.print and not any(
            self.bad_path.with_name(self.bad_path.name + s).exists() for s in ("-journal",)
        )

    def restore(self) -> None:
        if self.bad_path.is_dir():
            self.bad_path.rmdir()
        else:
            self.bad_path.chmod(0o644)
        self.bad_path.write_bytes(self.original)


@pytest.fixture(params=KINDS)
def damaged(request, tmp_path):
    store = Damaged(tmp_path, request.param)
    yield store
    if store.bad_path.exists() and not store.bad_path.is_dir():
        store.bad_path.chmod(0o644)  # so pytest can remove it


@pytest.mark.parametrize(
    ("argv", "word"),
    [(("fts", "drop"), "drop_error"), (("fts", "build"), "error"), (("fts", "rebuild"), "error"),
     (("dialogs", "clear"), "error"), (("dialogs", "assign"), "error")],
)
def test_partition_by_partition_commands_report_the_bad_one_and_do_the_rest(damaged, capsys, argv, word):
    code, out, err = damaged.run(capsys, *argv)
    lines = out.splitlines()
    assert code == 1 and err == ""
    assert [line.split(" ", 1)[0] for line in lines] == damaged.paths  # every partition, in path order
    bad = [line for line in lines if line.startswith(str(damaged.bad_path))]
    assert len(bad) == 1 and bad[0].startswith(f"{damaged.bad_path} {word}=") and len(bad[0]) > len(word) + 20
    assert all(f"{word}=" not in line for line in lines if line not in bad)
    assert damaged.untouched()


def test_fts_and_dialogs_keep_working_on_the_good_days(damaged, capsys):
    assert damaged.run(capsys, "fts", "drop")[0] == 1
    code, out, _ = damaged.run(capsys, "fts", "build", "--json")
    built = {p["path"]: p for p in json.loads(out)["partitions"]}
    assert code == 1 and "error" in built[str(damaged.bad_path)]
    assert [p["indexed"] > 0 for path, p in sorted(built.items()) if path != str(damaged.bad_path)] == [True, True]
    assert damaged.run(capsys, "dialogs", "clear")[0] == 1
    code, out, _ = damaged.run(capsys, "dialogs", "assign", "--json")
    assigned = json.loads(out)
    assert code == 1 and assigned[str(damaged.bad_path)] == {"error": assigned[str(damaged.bad_path)]["error"]}
    assert sorted(n for path, n in assigned.items() if path != str(damaged.bad_path)) == [3, 3]
    code, out, _ = damaged.run(capsys, "dialogs", "list", "--json")
    assert code == 1 and [d["requests"] for d in json.loads(out)["dialogs"]] == [3, 3]
    assert damaged.untouched()


def test_search_listings_and_stats_skip_the_bad_day_and_say_so(damaged, capsys):
    for argv in (("search", "sailing", "--json"), ("search", "--json")):
        code, out, err = damaged.run(capsys, *argv)
        found = json.loads(out)
        assert code == 1, argv
        assert sorted({r["ts"][:10] for r in found["results"]}) == ["2025-09-05", "2025-09-07"]
        assert len(found["results"]) == 6 and found["partitions_searched"] == 2
        assert err.count("\n") == 1 and err.startswith(f"logdb: skipped {damaged.bad_path}: ")
        assert found["warnings"] == [err.removeprefix("logdb: ").rstrip("\n")]
    code, out, err = damaged.run(capsys, "search", "sailing")  # text: the results, the warning on stderr
    assert code == 1 and len(out.splitlines()) == 2 * 6 and str(damaged.bad_path) in err
    code, out, err = damaged.run(capsys, "dialogs", "list")
    assert code == 1 and len(out.splitlines()) == 2 and str(damaged.bad_path) in err
    code, out, err = damaged.run(capsys, "stats")
    stats = json.loads(out)
    assert code == 1 and (stats["partitions"], stats["requests"], stats["dialogs"]) == (2, 6, 2)
    assert str(damaged.bad_path) in err and stats["warnings"]
    code, out, err = damaged.run(capsys, "search", "nothing-matches-this")  # no "run fts build" advice
    assert code == 1 and "fts build" not in err and str(damaged.bad_path) in err
    assert damaged.untouched()


def test_show_reads_good_days_and_names_the_bad_one(damaged, capsys):
    code, out, err = damaged.run(capsys, "show", damaged.good["request"], "--json")
    assert code == 0 and json.loads(out)["summary"]["request_id"] == damaged.good["request"] and err == ""
    code, out, err = damaged.run(capsys, "show", "--dialog", damaged.good["dialog"], "--json")
    assert code == 1 and len(json.loads(out)["turns"]) == 3 and str(damaged.bad_path) in err
    for argv in (("show", damaged.bad["request"]), ("show", "--dialog", damaged.bad["dialog"])):
        code, out, err = damaged.run(capsys, *argv)
        assert code == 1 and out == "" and err.count("\n") == 1, argv
        assert f"cannot read the partition for {BAD_DAY}" in err and str(damaged.bad_path) in err
        assert "not in the readable partitions" in err
    assert damaged.untouched()


def test_init_on_the_bad_day_reports_it_as_its_integrity(damaged, capsys):
    """init prints the partition's path and its integrity_check result (the seed's output): for a
    file SQLite cannot read, the error, with what to do on stderr; the file is not changed."""
    code = main(["init", "--date", BAD_DAY, "--db", str(damaged.base)])
    out, err = capsys.readouterr()
    path, integrity = out.splitlines()
    assert code == 1 and path == str(damaged.bad_path) and integrity != "ok"
    assert err.count("\n") == 1 and err.startswith(f"logdb: {damaged.bad_path}: {integrity}; ") and "restore" in err
    assert damaged.untouched()


def test_bundle_create_over_the_bad_day_fails_by_name(damaged, capsys, tmp_path):
    """A backup that silently missed a day would be worse than none: no bundle, the file named."""
    out_dir = tmp_path / "bundles"
    out_dir.mkdir()
    code = main(["bundle", "create", "--since", "2025-09-05", "--to", "2025-09-07", "--out", str(out_dir),
                 "--db", str(damaged.base)])
    out, err = capsys.readouterr()
    if damaged.bad_path.is_file() and damaged.bad_path.stat().st_size == 0:
        assert code == 0  # SQLite copies an empty file as an empty database: nothing is missing from it
        return
    assert code == 1 and out == "" and err.count("\n") == 1 and str(damaged.bad_path) in err and BAD_DAY in err
    assert list(out_dir.iterdir()) == [] and damaged.untouched()
    code = main(["bundle", "create", "--since", "2025-09-07", "--to", "2025-09-07", "--out", str(out_dir),
                 "--db", str(damaged.base)])
    assert code == 0 and len(list(out_dir.iterdir())) == 1
    capsys.readouterr()


def test_ingest_keeps_the_bad_days_records_until_the_file_is_back(damaged, capsys, tmp_path):
    """Records for the bad day are not stored, the checkpoint stops before them, the other days'
    are stored; once the file is restored the next ingest stores the rest: nothing is lost."""
    logs = tmp_path / "more-logs"
    start = T0 + timedelta(hours=6)
    records = []
    for day in (1, 2, 1, 2):  # the bad day and a good one, interleaved
        records += conversation([(f"late question on day {day}", "late answer")], start=start + timedelta(days=day, minutes=len(records)))
    write_jsonl(logs / "requests-late.jsonl", records)
    code, out, err = damaged.run(capsys, "ingest", "--from", str(logs))
    summary = json.loads(out.splitlines()[-1])
    assert code == 1 and summary["rows_inserted"] == 2
    assert list(summary["partition_errors"]) == [str(damaged.bad_path)]
    assert err.startswith(f"logdb: {damaged.bad_path}: ") and f"2 rows for {BAD_DAY} were not stored" in err
    assert damaged.untouched()

    again = damaged.run(capsys, "ingest", "--from", str(logs))  # still damaged: the same again, nothing doubles
    assert again[0] == 1 and json.loads(again[1].splitlines()[-1])["rows_inserted"] == 0
    damaged.restore()
    code, out, err = damaged.run(capsys, "ingest", "--from", str(logs))
    assert code == 0 and json.loads(out.splitlines()[-1])["rows_inserted"] == 2, err
    store = make_store(damaged.base, server_id="srv-a")
    late = queries.stats(store)
    store.close()
    assert (late["requests"], late["partitions"]) == (9 + 4, 3)


def test_the_same_store_without_damage_exits_0(tmp_path, capsys):
    base = tmp_path / "db"
    filled_store(base, days=3)
    for argv in (("fts", "build"), ("dialogs", "assign"), ("search", "sailing"), ("stats",), ("dialogs", "list")):
        assert main([*argv, "--db", str(base)]) == 0, argv
    capsys.readouterr()


def test_a_new_partition_being_created_is_not_taken_for_a_truncated_one(tmp_path, capsys):
    """SQLite creates a file empty and writes its header a moment later: an empty partition that
    was just created is opened as the new file it is, not reported."""
    base = tmp_path / "db"
    filled_store(base, days=1)
    fresh = partitions.partition_path(base, datetime(2025, 9, 20, tzinfo=UTC).date())
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"")
    assert main(["stats", "--db", str(base), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["partitions"] == 2
    shutil.rmtree(base)


def test_dialogs_assign_keeps_a_dialog_whose_parent_is_in_the_bad_day(tmp_path, capsys):
    """A conversation crosses midnight from the bad day: its next-day turn keeps its dialog and
    parent while the bad day cannot be read (regrouping it without its parent would split the
    conversation); a turn without a dialog yet is still grouped."""
    base = tmp_path / "db"
    logs = tmp_path / "logs"
    night = datetime(2025, 9, 6, 23, 50, tzinfo=UTC)
    turns = [("before midnight", "ok"), ("after midnight", "fine")]
    write_jsonl(logs / "a.jsonl", conversation(turns, start=night, gap_s=1200)
                + conversation([("other day", "yes")], start=night + timedelta(days=1)))
    assert main(["ingest", "--from", str(logs), "--db", str(base)]) == 0
    store = make_store(base)
    late = partitions.partition_path(base, night.date() + timedelta(days=1))
    with store.connected(late) as db:
        db.execute_sql("UPDATE requests SET dialog_id = NULL, dialog_parent_id = NULL WHERE request_id IN"
                       " (SELECT request_id FROM requests ORDER BY ts DESC LIMIT 1)")  # "other day": not grouped yet
        before = db.execute_sql("SELECT request_id, dialog_id, dialog_parent_id FROM requests ORDER BY ts").fetchall()
    store.close()
    assert before[0][1] and before[0][2]  # the after-midnight turn continues the bad day's turn
    damage_partition(partitions.partition_path(base, night.date()), "damaged_pages")
    capsys.readouterr()
    assert main(["dialogs", "assign", "--db", str(base)]) == 1
    store = make_store(base)
    with store.connected(late) as db:
        after = db.execute_sql("SELECT request_id, dialog_id, dialog_parent_id FROM requests ORDER BY ts").fetchall()
    store.close()
    assert after[0] == before[0] and after[1][1] is not None


def test_fts_rebuild_over_a_damaged_table_keeps_the_index_it_had(tmp_path, capsys):
    """`fts rebuild` drops and builds in one transaction: when the rows cannot be read (their
    table's pages damaged, the index intact), the index stays and the file is not changed."""
    import sqlite3

    base = tmp_path / "db"
    filled_store(base, days=1, turns=3)
    [part] = partitions.discover(base)
    with contextlib.closing(sqlite3.connect(part.path)) as db:
        [root] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'requests'").fetchone()
        [page_size] = db.execute("PRAGMA page_size").fetchone()
    with part.path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xff" * page_size)
    before = part.path.read_bytes()
    code = main(["fts", "rebuild", "--db", str(base)])
    out = capsys.readouterr().out
    assert code == 1 and f"{part.path} error=" in out
    assert part.path.read_bytes() == before
    with contextlib.closing(sqlite3.connect(part.path)) as db:
        assert db.execute("SELECT count(*) FROM request_text_index WHERE request_text_index MATCH 'sailing'").fetchone()[0] > 0


@pytest.mark.parametrize("kind", ["not_a_database", "zero_filled", "unopenable"])
def test_ingest_with_a_damaged_control_db_names_it_and_says_what_to_do(tmp_path, capsys, kind):
    """The control DB (checkpoints) is no partition: its error was `the log store cannot use one of
    its files: file is not a database`, naming no file (and INTERNAL over gRPC)."""
    base = tmp_path / "db"
    filled_store(base, days=1)
    control = partitions.control_path(base)
    damage_partition(control, kind)
    before = _fingerprint(control)
    logs = tmp_path / "more-logs"
    write_jsonl(logs / "requests-late.jsonl", conversation([("q", "a")], start=T0))
    code = main(["ingest", "--from", str(logs), "--db", str(base)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith("logdb: The log store cannot use its ingest checkpoints (control.sqlite3): ")
    assert "move it out of the log store" in err and f"(file: {control})" in err
    assert _fingerprint(control) == before
    assert main(["init", "--date", "2025-09-05", "--db", str(base)]) == 1  # init opens the control DB too
    assert capsys.readouterr().err.startswith("logdb: The log store cannot use its ingest checkpoints (control.sqlite3)")
    assert _fingerprint(control) == before
    shutil.move(control, tmp_path / "control.sqlite3.bad")  # what the message says: then ingest works
    assert main(["ingest", "--from", str(logs), "--db", str(base)]) == 0
    capsys.readouterr()
