"""Live ingestion as the gateway runs it: new request log lines become searchable within seconds,
and the event loop keeps running while the worker thread ingests."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiproxy.config import Settings
from aiproxy.logstore.live import run_live_ingest
from aiproxy.logstore.search import search
from aiproxy.testing.logrecords import chat_record, conversation, make_store, write_jsonl

T0 = datetime(2025, 9, 10, 9, 0, tzinfo=UTC)


def _settings(tmp_path, **logdb):
    return Settings(
        log_dir=str(tmp_path / "logs"),
        logdb={"enabled": "true", "dir": str(tmp_path / "logs" / "db"), "server_id": "srv-live", "live_interval_s": "0.2", **logdb},
    )


async def _wait_for(predicate, limit_s: float = 10.0) -> float:
    started = time.monotonic()
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() - started < limit_s, "not ingested in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_new_records_become_searchable_within_seconds(tmp_path):
    log = tmp_path / "logs" / "requests" / "requests-20250910-123.jsonl"
    reader = make_store(tmp_path / "logs" / "db")

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(run_live_ingest(_settings(tmp_path), stop))
        await asyncio.sleep(0.3)  # starts with no log file at all
        turns = conversation([("first question about otters", "otters swim"), ("and beavers?", "they build")], start=T0)
        write_jsonl(log, turns[:1])
        await _wait_for(lambda: len(search(reader, "otters").hits) == 1)
        write_jsonl(log, turns[1:])
        await _wait_for(lambda: len(search(reader, "beavers").hits) == 1)
        # Rows are searchable as soon as they are inserted; threading them follows in the same round.
        await _wait_for(lambda: all(h.fields["dialog_id"] for h in search(reader, "otters").hits))
        hits = search(reader, "otters").hits
        assert len({h.fields["dialog_id"] for h in hits}) == 1 and len(hits) == 2  # one dialog, threaded live
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_the_event_loop_is_not_blocked_while_ingesting(tmp_path):
    records = [chat_record([{"role": "user", "content": f"bulk {i} " * 50}], "x" * 500, ts=T0 + timedelta(seconds=i)) for i in range(3000)]
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", records)
    reader = make_store(tmp_path / "logs" / "db")

    async def scenario():
        stop = asyncio.Event()
        gaps = []

        async def ticker():
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        task = asyncio.create_task(run_live_ingest(_settings(tmp_path), stop))
        await _wait_for(lambda: len(search(reader, "").hits) == 20 and search(reader, "bulk", limit=500).next_cursor != "", 60)
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, tick), 10)
        assert max(gaps) < 1.0, max(gaps)

    asyncio.run(scenario())


def test_disabled_live_ingest_returns_at_once(tmp_path):
    async def scenario():
        await asyncio.wait_for(run_live_ingest(_settings(tmp_path, enabled="false"), asyncio.Event()), 2)

    asyncio.run(scenario())
    assert not (tmp_path / "logs" / "db").exists()


def test_one_process_ingests_at_a_time_and_another_takes_over(tmp_path):
    from aiproxy.logstore.live import LiveIngester

    write_jsonl(tmp_path / "logs" / "requests" / "r.jsonl", conversation([("lock", "step")], start=T0))
    first = LiveIngester(make_store(tmp_path / "logs" / "db"), tmp_path / "logs" / "requests")
    second = LiveIngester(make_store(tmp_path / "logs" / "db"), tmp_path / "logs" / "requests")
    assert first.run_once().rows_inserted == 1
    assert second.run_once() is None  # the first holds the lock
    first.close()  # as when its process exits
    write_jsonl(tmp_path / "logs" / "requests" / "r.jsonl", conversation([("again", "more")], start=T0))
    assert second.run_once().rows_inserted == 1
    second.close()


def _source_paths(tmp_path) -> list[str]:
    import sqlite3

    with sqlite3.connect(tmp_path / "logs" / "db" / "control.sqlite3") as control:
        return [row[0] for row in control.execute("SELECT source_path FROM ingest_sources ORDER BY source_path")]


def test_live_ingest_stores_absolute_paths_as_the_cli_does(tmp_path, monkeypatch):
    from aiproxy.logstore.ingest import ingest
    from aiproxy.logstore.live import LiveIngester

    monkeypatch.chdir(tmp_path)  # LOG_DIR=logs, the default: relative to the gateway's directory
    log = write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", conversation([("rel", "path")], start=T0))
    store = make_store(Path("logs") / "db")
    live = LiveIngester(store, Path("logs") / "requests")
    assert live.run_once().rows_inserted == 1
    live.close()
    assert _source_paths(tmp_path) == [str(log)]
    # `logdb ingest --from logs` finds the gateway's checkpoint: nothing is read again.
    again = ingest(store, Path("logs"))
    assert (again.rows_inserted, again.rows_skipped) == (0, 0)
    assert _source_paths(tmp_path) == [str(log)]


def test_relative_checkpoints_of_an_earlier_gateway_are_taken_over(tmp_path, monkeypatch):
    from aiproxy.logstore.ingest import ingest
    from aiproxy.logstore.live import LiveIngester

    monkeypatch.chdir(tmp_path)
    log = write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl",
                      conversation([("one", "a"), ("two", "b")], start=T0))
    store = make_store(Path("logs") / "db")
    relative = Path("logs") / "requests" / log.name
    ingest(store, Path("logs") / "requests", files=[relative])  # what the earlier live ingester stored
    assert _source_paths(tmp_path) == [str(relative)]
    live = LiveIngester(store, Path("logs") / "requests")
    report = live.run_once()
    live.close()
    assert (report.rows_inserted, report.rows_skipped) == (0, 0)  # resumed, not read from 0 again
    assert _source_paths(tmp_path) == [str(log)]
    again = ingest(store, Path("logs"))
    assert (again.rows_inserted, again.rows_skipped) == (0, 0)


def test_when_the_cli_already_read_a_file_again_the_furthest_checkpoint_is_kept(tmp_path, monkeypatch):
    from aiproxy.logstore.ingest import ingest
    from aiproxy.logstore.live import LiveIngester

    monkeypatch.chdir(tmp_path)
    log = write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", conversation([("one", "a")], start=T0))
    store = make_store(Path("logs") / "db")
    ingest(store, Path("logs") / "requests", files=[Path("logs") / "requests" / log.name])  # the earlier gateway
    write_jsonl(log, conversation([("two", "b")], start=T0 + timedelta(minutes=5)))
    ingest(store, Path("logs"))  # an operator's `logdb ingest`: a second, absolute row, further on
    assert len(_source_paths(tmp_path)) == 2
    live = LiveIngester(store, Path("logs") / "requests")
    report = live.run_once()
    live.close()
    assert (report.rows_inserted, report.rows_skipped) == (0, 0)
    assert _source_paths(tmp_path) == [str(log)]


def test_a_fragment_left_by_a_killed_process_is_reported_and_ingest_goes_on(tmp_path):
    """A process died mid-line; its successor (same pid: PID 1 in a container) writes on. The
    fragment becomes a corrupt line of its own, reported once as file:line; the records written
    after it are ingested, this round and the next."""
    import logging
    import os

    import orjson
    from loguru import logger

    from aiproxy.logsetup import configure_logging, write_request_record
    from aiproxy.logstore.live import LiveIngester

    log = tmp_path / "logs" / "requests" / f"requests-{datetime.now(UTC):%Y%m%d}-{os.getpid()}.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(b'{"schema":"aiproxy.request.v1","request_id":"killed-mid-write","ts":"2025-')
    root_handlers, root_level = logging.root.handlers[:], logging.root.level
    live = LiveIngester(make_store(tmp_path / "logs" / "db"), tmp_path / "logs" / "requests")
    try:
        configure_logging(Settings(log_dir=str(tmp_path / "logs"), enable_file_logging=False), stderr=False)
        write_request_record(orjson.dumps(conversation([("after the crash", "fine")], start=T0)[0]))
        logger.complete()
        first = live.run_once()
        assert (first.rows_inserted, first.records_corrupt) == (1, 1)
        assert first.problems[0].startswith(f"{log}:1: invalid JSON")
        write_request_record(orjson.dumps(conversation([("and later", "still fine")], start=T0)[0]))
        logger.complete()
        second = live.run_once()  # past the fragment for good: not reported again
        assert (second.rows_inserted, second.records_corrupt, second.problems) == (1, 0, [])
    finally:
        live.close()
        logger.remove()
        logging.root.handlers[:], logging.root.level = root_handlers, root_level


def test_a_damaged_partition_is_said_once_and_retried_less_often_until_it_is_back(tmp_path, monkeypatch):
    """Each round would read the request logs again from the checkpoint held before the bad day's
    rows: the rounds back off (doubling) and the warning is not repeated; once the file is back,
    the next round stores the rows and says so."""
    from loguru import logger

    from aiproxy.logstore import partitions, queries
    from aiproxy.logstore.live import LiveIngester
    from aiproxy.testing import bundles

    base = tmp_path / "logs" / "db"
    bundles.filled_store(base, days=3, turns=1)
    [bad] = [p.path for p in partitions.discover(base) if str(p.first_day) == "2025-09-06"]
    original = bad.read_bytes()
    bundles.damage_partition(bad, "not_a_database")
    late = conversation([("late question", "late answer"), ("and more", "more")], start=bundles.T0 + timedelta(days=1, hours=6))
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250906-7.jsonl", late)
    rounds, said = [], []
    run_once = LiveIngester.run_once
    monkeypatch.setattr(LiveIngester, "run_once", lambda self: rounds.append(time.monotonic()) or run_once(self))
    sink = logger.add(lambda message: said.append(message.record["message"]), level="INFO",
                      filter=lambda record: record["message"].startswith("log store"))
    reader = make_store(base)

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(run_live_ingest(_settings(tmp_path, live_interval_s="0.05"), stop))
        await asyncio.sleep(1.6)
        assert 3 <= len(rounds) <= 7, rounds  # 0.05, 0.1, 0.2, 0.4, 0.8 s apart; ~30 rounds without backing off
        assert len([m for m in said if str(bad) in m]) == 1, said
        bad.write_bytes(original)
        await _wait_for(lambda: queries.stats(reader)["requests"] == 3 + 2, limit_s=5)
        stop.set()
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(scenario())
    finally:
        logger.remove(sink)
        reader.close()
    assert said[-1] == "log store: the damaged partitions are usable again; the rows held back are stored"


def test_a_stop_ends_the_round_in_progress_at_once(tmp_path):
    """Was: the round went on to its end in its thread, which the gateway's exit then waited for (the
    event loop's default executor is joined), with the store already closed under it: a first ingest
    of a large backlog held a stop with SHUTDOWN_GRACE_SECONDS=1 for over a minute."""
    records = [chat_record([{"role": "user", "content": f"bulk {i} " * 50}], "x" * 500, ts=T0 + timedelta(seconds=i))
               for i in range(20000)]
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", records)
    reader = make_store(tmp_path / "logs" / "db")

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(run_live_ingest(_settings(tmp_path, batch_rows="200"), stop))
        await _wait_for(lambda: len(search(reader, "bulk").hits) > 0, 60)  # the round is under way
        stop.set()  # as the cell does: set when the drain starts, the task cancelled when it ends
        task.cancel()
        started = time.monotonic()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_default_executor()  # what asyncio.Runner's close waits for
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0
