"""Ingest against real files and real SQLite partitions, including the seed §11 failures."""

import gzip
import json
import os
import sqlite3
import time
from datetime import UTC, date, datetime, timedelta, timezone

from aiproxy.logstore.ingest import IDLE_SECONDS, ingest
from aiproxy.logstore.search import search
from aiproxy.testing.logrecords import (
    chat_record,
    make_store,
    seed_block,
    seed_record,
    write_jsonl,
)

T0 = datetime(2025, 9, 9, 10, 0, tzinfo=UTC)


def _rows(store) -> int:
    total = 0
    for part in store.existing():
        with sqlite3.connect(part.path) as conn:
            total += conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    return total


def _records(n: int, start=T0, step=timedelta(minutes=1), **kwargs):
    return [chat_record([{"role": "user", "content": f"question {i}"}], f"answer {i}", ts=start + i * step, **kwargs) for i in range(n)]


def test_ingest_is_idempotent_and_resumes_from_its_checkpoint(tmp_path):
    log = tmp_path / "logs" / "requests" / "requests-20250909-1.jsonl"
    write_jsonl(log, _records(5))
    store = make_store(tmp_path / "db")
    first = ingest(store, tmp_path / "logs")
    assert (first.files_scanned, first.rows_inserted, first.records_corrupt) == (1, 5, 0)
    again = ingest(store, tmp_path / "logs")
    assert again.rows_inserted == 0 and again.rows_skipped == 0  # nothing re-read: the checkpoint held
    write_jsonl(log, _records(3, start=T0 + timedelta(hours=1)))
    assert ingest(store, tmp_path / "logs").rows_inserted == 3
    assert _rows(store) == 8


def test_incomplete_last_line_waits_for_the_next_run(tmp_path):
    log = tmp_path / "logs" / "requests.jsonl"
    records = _records(2)
    line = json.dumps(records[1]).encode()
    write_jsonl(log, records[:1])
    with open(log, "ab") as out:
        out.write(line[:40])
    store = make_store(tmp_path / "db")
    report = ingest(store, log)
    assert report.rows_inserted == 1 and report.records_corrupt == 0
    with open(log, "ab") as out:
        out.write(line[40:] + b"\n")
    assert ingest(store, log).rows_inserted == 1
    assert _rows(store) == 2


def test_fragment_left_by_a_dead_writer_is_reported_once_the_file_is_idle(tmp_path):
    """A gateway killed mid-write leaves half a line that nothing will finish: once the file has
    been idle for IDLE_SECONDS it is reported as corrupt (file:line) instead of silently blocking
    the file's checkpoint; a restarted gateway's next record still lands on the right line."""
    log = tmp_path / "logs" / "requests.jsonl"
    records = _records(3)
    write_jsonl(log, records[:1])
    with open(log, "ab") as out:
        out.write(json.dumps(records[1]).encode()[:40])
    old = time.time() - IDLE_SECONDS - 5
    os.utime(log, (old, old))
    store = make_store(tmp_path / "db")
    report = ingest(store, log)
    assert (report.rows_inserted, report.records_corrupt) == (1, 1)
    assert report.problems[0].startswith(f"{log}:2: unterminated last line")
    assert ingest(store, log).records_corrupt == 0  # reported once: the checkpoint moved past it
    with open(log, "ab") as out:  # a restarted gateway ends the fragment, then writes its record
        out.write(b"\n" + json.dumps(records[2]).encode() + b"\n" + b"not json\n")
    again = ingest(store, log)
    assert (again.rows_inserted, again.records_corrupt) == (1, 1)
    assert again.problems[0].startswith(f"{log}:4: invalid JSON")
    assert _rows(store) == 2

def test_corrupt_record_is_reported_with_file_and_line_and_later_records_still_land(tmp_path):
    log = tmp_path / "logs" / "r.jsonl"
    write_jsonl(log, _records(2))
    with open(log, "ab") as out:
        out.write(b'{"request_id": "broken", "ts": \n')
    write_jsonl(log, _records(2, start=T0 + timedelta(hours=2)))
    store = make_store(tmp_path / "db")
    report = ingest(store, tmp_path / "logs")
    assert report.rows_inserted == 4 and report.records_corrupt == 1
    assert report.problems[0].startswith(f"{log}:3: invalid JSON")
    write_jsonl(log, _records(1, start=T0 + timedelta(hours=5)))
    later = ingest(store, tmp_path / "logs")
    assert later.rows_inserted == 1 and later.records_corrupt == 0  # the bad line is not re-reported


def test_truncated_and_rotated_files_are_read_again_from_the_start(tmp_path):
    log = tmp_path / "logs" / "r.jsonl"
    write_jsonl(log, _records(4))
    store = make_store(tmp_path / "db")
    ingest(store, log)
    write_jsonl(log, _records(1, start=T0 + timedelta(days=1)), mode="wb")  # truncated and rewritten
    report = ingest(store, log)
    assert report.rows_inserted == 1
    rotated = _records(6, start=T0 + timedelta(days=2))  # replaced by a longer, different file
    write_jsonl(log, rotated, mode="wb")
    assert ingest(store, log).rows_inserted == 6
    assert _rows(store) == 11


def test_seed_11_1_a_brace_in_a_prompt_loses_nothing(tmp_path):
    """The seed counted braces: `function f() {` lost that record and every later one, forever."""
    records = [
        chat_record([{"role": "user", "content": "function f() {"}], "missing } here", ts=T0),
        chat_record([{"role": "user", "content": 'quote " and } { braces'}], "ok", ts=T0 + timedelta(minutes=1)),
        *_records(2, start=T0 + timedelta(minutes=2)),
    ]
    log = tmp_path / "logs" / "v1_chat_completions.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(seed_block(seed_record(r)) for r in records), encoding="utf-8")
    store = make_store(tmp_path / "db")
    report = ingest(store, tmp_path / "logs")
    assert (report.rows_inserted, report.records_corrupt) == (4, 0)
    with open(log, "a", encoding="utf-8") as out:
        out.write(seed_block(seed_record(_records(1, start=T0 + timedelta(hours=1))[0])))
    assert ingest(store, tmp_path / "logs").rows_inserted == 1
    assert search(store, '"function f"').hits[0].fields["model_mapped"] == "openai/gpt-4o"


def test_seed_11_9_date_filters_never_make_later_runs_skip_records(tmp_path):
    """The seed moved the checkpoint past filtered records, losing them for good."""
    log = tmp_path / "logs" / "r.jsonl"
    write_jsonl(log, _records(6, step=timedelta(days=1)))  # 2025-09-09 .. 09-14
    store = make_store(tmp_path / "db")
    early = ingest(store, log, to=date(2025, 9, 10))
    assert (early.rows_inserted, early.rows_filtered) == (2, 4)
    late = ingest(store, log, since=date(2025, 9, 13))
    assert late.rows_inserted == 2
    rest = ingest(store, log)
    assert rest.rows_inserted == 2 and _rows(store) == 6


def test_seed_logs_and_gateway_logs_ingest_together_in_parallel(tmp_path):
    logs = tmp_path / "logs"
    for day in range(6):
        write_jsonl(logs / "requests" / f"requests-2025091{day}-1.jsonl", _records(20, start=T0 + timedelta(days=day)))
    seed = [seed_record(r) for r in _records(5, start=T0 + timedelta(days=7))]
    (logs / "v1_chat_completions.log").write_text("".join(seed_block(e) for e in seed), encoding="utf-8")
    (logs / "app.log").write_text("2025-09-10 12:00:00 - INFO - Application startup\n", encoding="utf-8")
    store = make_store(tmp_path / "db", import_parallelism=3, batch_rows=7, memory_mb=8)
    report = ingest(store, logs)
    assert (report.files_scanned, report.rows_inserted, report.records_corrupt) == (8, 125, 0)
    assert len(store.existing()) == 7  # six gateway days and the seed log's day
    assert _rows(store) == 125


def test_record_server_id_wins_and_dedup_is_per_server(tmp_path):
    log = tmp_path / "logs" / "r.jsonl"
    a = _records(1, request_id="same-id")[0]
    b = {**a, "server_id": "srv-other"}
    write_jsonl(log, [a, b, a])
    store = make_store(tmp_path / "db")
    report = ingest(store, log)
    assert report.rows_inserted == 2 and report.rows_skipped == 1
    with sqlite3.connect(store.existing()[0].path) as conn:
        servers = sorted(r[0] for r in conn.execute("SELECT server_id FROM requests"))
        known = sorted(r[0] for r in conn.execute("SELECT server_id FROM servers"))
    assert servers == ["srv-other", "srv-test"] == known


def test_the_control_db_names_the_ingesting_server_as_in_the_seed(tmp_path):
    """seed-spec §7.1/§7.3: control.sqlite3 holds the checkpoints and a `servers` row of the store's server."""
    log = tmp_path / "logs" / "v1_chat_completions.log"
    log.parent.mkdir()
    log.write_text("".join(seed_block(seed_record(r)) for r in _records(2)), encoding="utf-8")
    store = make_store(tmp_path / "db", env="prod")
    ingest(store, tmp_path / "logs")
    ingest(store, tmp_path / "logs")
    with sqlite3.connect(tmp_path / "db" / "control.sqlite3") as conn:
        servers = conn.execute("SELECT server_id, hostname, env FROM servers").fetchall()
        checkpoints = conn.execute("SELECT COUNT(*) FROM ingest_sources").fetchone()[0]
    assert [(s[0], s[2]) for s in servers] == [("srv-local", "prod")] and servers[0][1] and checkpoints == 1


def test_a_reused_request_id_keeps_every_exchange(tmp_path):
    """Clients choose X-Request-ID and may reuse one: a different exchange under a stored id is
    kept under `<id>@<its timestamp>`; the same lines ingested again still add nothing."""
    log = tmp_path / "logs" / "r.jsonl"
    first, second, third = (
        chat_record([{"role": "user", "content": word}], "ok", ts=T0 + timedelta(seconds=i), request_id="dup-id")
        for i, word in enumerate(("alpha", "bravo", "charlie"))
    )
    write_jsonl(log, [first, second])
    store = make_store(tmp_path / "db")
    assert ingest(store, log).rows_inserted == 2
    write_jsonl(log, [third])  # appended: a later run, the id already stored
    assert ingest(store, log).rows_inserted == 1
    ids = {word: [h.fields["request_id"] for h in search(store, word).hits] for word in ("alpha", "bravo", "charlie")}
    assert ids == {"alpha": ["dup-id"], "bravo": [f"dup-id@{second['ts']}"], "charlie": [f"dup-id@{third['ts']}"]}
    copy = tmp_path / "copy" / "r.jsonl"  # the same lines under another name: no checkpoint to skip them
    copy.parent.mkdir()
    copy.write_bytes(log.read_bytes())
    assert ingest(store, copy).rows_inserted == 0
    fresh = make_store(tmp_path / "db2")  # all three in one batch: the same ids
    assert ingest(fresh, copy).rows_inserted == 3
    assert {h.fields["request_id"] for h in search(fresh, "ok").hits} == {"dup-id", *ids["bravo"], *ids["charlie"]}


def test_a_refused_request_without_a_readable_body_is_stored_with_its_status(tmp_path):
    """The gateway logs a 400 for malformed JSON and a 413 with `"request": null`: still a row."""
    refused = {**chat_record([], "bad JSON", ts=T0, status_code=400), "request": None, "model_original": None}
    write_jsonl(tmp_path / "logs" / "r.jsonl", [refused])
    store = make_store(tmp_path / "db")
    report = ingest(store, tmp_path / "logs")
    assert (report.rows_inserted, report.records_corrupt) == (1, 0)
    (hit,) = search(store, "").hits
    assert (hit.fields["status_code"], hit.fields["model_original"]) == (400, None)


def test_records_of_any_shape_never_block_the_records_after_them(tmp_path):
    # What the gateway logs for `"messages": 1` (a 400) or a message with `"tool_calls": 5`, an
    # upstream's `"choices": 5` and a 2**64-1 token count: rows, with whatever text they have.
    odd = _records(4)
    odd[0]["request"]["messages"] = 1
    odd[1]["request"]["messages"] = [{"role": "user", "content": "odd tools", "tool_calls": 5}, "x", [1]]
    odd[2]["response"] = {"id": "x", "object": "chat.completion", "choices": 5}
    odd[3]["usage"] = {"prompt_tokens": 2**64 - 1}
    # A record no row can be made of (orjson writes at most 254 levels of nesting) is corrupt.
    unwritable = _records(1)[0]
    unwritable["request"]["deep"] = json.loads("[" * 300 + "]" * 300)
    log = tmp_path / "logs" / "r.jsonl"
    write_jsonl(log, odd)
    with open(log, "a") as out:
        out.write(json.dumps(unwritable) + "\n")
    write_jsonl(log, _records(1, start=T0 + timedelta(hours=1), key="after"))
    store = make_store(tmp_path / "db")
    report = ingest(store, tmp_path / "logs")
    assert (report.rows_inserted, report.records_corrupt) == (5, 1), report.problems
    assert report.problems[0].startswith(f"{log}:5: cannot read the record: ")
    assert [hit.fields["request_id"] for hit in search(store, "odd tools").hits] == [odd[1]["request_id"]]
    assert ingest(store, tmp_path / "logs").records_corrupt == 0  # the checkpoint moved past it


def test_changing_the_granularity_never_doubles_rows(tmp_path):
    """Daily files beside the weekly ones of the same days (the setting changed): lines read again
    (a reset checkpoint, another copy of the file) are found in the weekly file, not stored twice."""
    log = tmp_path / "logs" / "r.jsonl"
    write_jsonl(log, _records(5))
    weekly = make_store(tmp_path / "db", partition_granularity="weekly")
    assert ingest(weekly, log).rows_inserted == 5
    weekly.close()
    copy = tmp_path / "again" / "r.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(log.read_bytes())
    write_jsonl(copy, _records(1, start=T0 + timedelta(hours=1), request_id="new-one"))
    daily = make_store(tmp_path / "db", partition_granularity="daily")
    report = ingest(daily, copy)
    assert (report.rows_inserted, report.rows_skipped) == (1, 5)
    assert _rows(daily) == 6 and len(search(daily, "").hits) == 6


def test_a_reused_id_after_a_granularity_change_still_keeps_the_later_exchange(tmp_path):
    log = tmp_path / "logs" / "r.jsonl"
    first, later = (chat_record([{"role": "user", "content": w}], "ok", ts=T0 + timedelta(seconds=i), request_id="dup")
                    for i, w in enumerate(("alpha", "bravo")))
    write_jsonl(log, [first])
    weekly = make_store(tmp_path / "db", partition_granularity="weekly")
    assert ingest(weekly, log).rows_inserted == 1
    weekly.close()
    copy = tmp_path / "again" / "r.jsonl"
    write_jsonl(copy, [first, later])
    daily = make_store(tmp_path / "db", partition_granularity="daily")
    assert (ingest(daily, copy).rows_inserted, _rows(daily)) == (1, 2)
    assert ingest(daily, copy).rows_inserted == 0  # and again: nothing more
    assert [h.fields["request_id"] for h in search(daily, "bravo").hits] == [f"dup@{later['ts']}"]


def test_a_row_stored_with_an_offset_timestamp_is_the_same_exchange_when_ingested_again(tmp_path):
    """Rows ingested before timestamps were normalised to UTC Z may hold `…+02:00`: the same
    record read again (now normalised) must not count as another exchange under a reused id."""
    log = tmp_path / "logs" / "r.jsonl"
    record = chat_record([{"role": "user", "content": "alpha"}], "ok", ts=T0, request_id="same")
    write_jsonl(log, [record])
    store = make_store(tmp_path / "db")
    assert ingest(store, log).rows_inserted == 1
    offset = datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=2)))
    for partition in (tmp_path / "db").rglob("*.sqlite3"):
        with sqlite3.connect(partition) as conn:  # as an older gateway stored it
            conn.execute("UPDATE requests SET ts_iso = ? WHERE request_id = 'same'", (offset.isoformat(),))
    copy = tmp_path / "again" / "r.jsonl"  # no checkpoint to skip it
    write_jsonl(copy, [record])
    assert (ingest(store, copy).rows_inserted, _rows(store)) == (0, 1)


def test_one_control_db_connection_per_thread_serves_every_file(tmp_path, monkeypatch):
    """Seed §11 Performance: the ingester opened a new control DB connection for every file."""
    import peewee

    for day in range(8):
        write_jsonl(tmp_path / "logs" / "requests" / f"requests-2025091{day}-1.jsonl", _records(2, start=T0 + timedelta(days=day)))
    opened = []
    real_connect = peewee.SqliteDatabase._connect
    monkeypatch.setattr(peewee.SqliteDatabase, "_connect",
                        lambda self: opened.append(os.path.basename(self.database)) or real_connect(self))
    store = make_store(tmp_path / "db", import_parallelism=2)
    assert ingest(store, tmp_path / "logs").files_scanned == 8 and _rows(store) == 16
    assert 1 <= opened.count("control.sqlite3") <= 3, opened  # the calling thread and the two workers
    del opened[:]
    assert ingest(store, tmp_path / "logs").files_scanned == 8  # eight checkpoints read, nothing new
    assert opened.count("control.sqlite3") <= 2, opened  # this run's two workers


def test_links_to_nothing_and_fifos_named_like_logs_are_not_sources(tmp_path):
    """A dangling `*.jsonl` link (its target removed by retention), a link loop or a FIFO made the
    whole ingest (the CLI's, and every live round) fail with FileNotFoundError; a FIFO would block it."""
    logs = tmp_path / "logs" / "requests"
    write_jsonl(logs / "requests-20250909-1.jsonl", _records(3))
    (logs / "current.jsonl").symlink_to(logs / "requests-20250908-1.jsonl")  # removed by retention
    (logs / "loop-a.jsonl").symlink_to(logs / "loop-b.jsonl")
    (logs / "loop-b.jsonl").symlink_to(logs / "loop-a.jsonl")
    os.mkfifo(logs / "pipe.jsonl")
    report = ingest(make_store(tmp_path / "db"), tmp_path / "logs")
    assert (report.files_scanned, report.rows_inserted) == (1, 3)


def test_compressed_rotations_are_not_read_as_text(tmp_path):
    """logrotate's `compress` leaves `*.jsonl.1.gz`, `app.log.1.gz`: they matched `.jsonl.` / `.log.`
    and were read as text, one "invalid JSON" corrupt record per line of gzip (and archived as raw logs)."""
    logs = tmp_path / "logs"
    write_jsonl(logs / "requests" / "requests-20250909-1.jsonl", _records(3))
    rotated = write_jsonl(logs / "requests" / "requests-20250908-1.jsonl.1", _records(2, start=T0 - timedelta(days=1)))
    for name in ("requests/requests-20250907-1.jsonl.1.gz", "requests/requests-20250906-1.jsonl.gz",
                 "app.log.1.gz", "v1_chat_completions.log.2.bz2"):
        (logs / name).write_bytes(gzip.compress(rotated.read_bytes()))
    report = ingest(make_store(tmp_path / "db"), logs)
    assert (report.files_scanned, report.rows_inserted, report.records_corrupt) == (2, 5, 0), report.problems


def test_a_file_removed_between_listing_and_reading_is_a_problem_not_a_failure(tmp_path):
    logs = tmp_path / "logs" / "requests"
    write_jsonl(logs / "requests-20250909-1.jsonl", _records(3))
    gone = logs / "requests-20250901-1.jsonl"
    report = ingest(make_store(tmp_path / "db"), tmp_path / "logs", files=[gone, logs / "requests-20250909-1.jsonl"])
    assert report.rows_inserted == 3
    assert report.problems == [f"{gone}: no longer there (removed while ingest ran?)"]
