"""Seeded random damage to real request logs (lines the gateway's own record code writes): a last
line cut, bytes that are not UTF-8, runs of NUL (a crash with preallocated blocks), fields of every
wrong type, repeated lines, huge lines, CRLF endings, blank lines; and between two runs the file
appended to, truncated and rewritten, replaced by a new file (new inode), cut mid-line, its
unfinished last line completed, or grown while ingest reads it.

Properties: ingest never raises; every intact line's record is stored; every complete line is
counted once as inserted, skipped, corrupt or filtered (an unfinished last line is left for the
next run unless the file is idle, then counted too); a line still being written is never stored;
another run adds nothing, and no record is stored twice. Each seed runs CASES cases; a failure
names seed and case."""

import json
import os
import random
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from aiproxy.chat.record import Exchange, _serialised
from aiproxy.logstore.ingest import ingest
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.logrecords import iso, make_store

SEEDS = fuzz_seeds(1, 2)
CASES = 20  # per seed and test: ~0.06 s each
T0 = datetime(2025, 9, 5, 23, 58, tzinfo=UTC)  # the records span midnight: two partitions
FIELDS = ("schema", "request_id", "ts", "server_id", "transport", "endpoint", "api_key_hash", "model_original",
          "model_mapped", "provider", "stream", "status_code", "latency_ms", "ttft_ms", "usage", "finish_reason",
          "error", "request", "response")
ODD_VALUES = (None, True, False, 0, -1, 2**63, -(2**63) - 1, 2**70, 1.5, 1e308, "", "x", "\x00", "é🙂", [], [1, "a"],
              {}, {"a": {"b": [None]}}, "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
              "1969-12-31T23:59:59Z", "2025-13-01T00:00:00Z", "2025-09-05T12:00:00+14:00", "x" * 5000,
              {"prompt_tokens": "12", "completion_tokens": 2**70, "total_tokens": -3}, {"messages": "hi"},
              {"messages": [{"role": 5, "content": {"x": 1}}]}, {"choices": [{"message": {"content": ["a", 1]}}]})
DAMAGES = ("cut_last", "not_utf8", "nul_run", "wrong_type", "repeat", "huge", "crlf", "blank")


def gateway_lines(rng: random.Random, count: int) -> list[bytes]:
    """Request log lines as the gateway writes them (chat.record)."""
    lines = []
    for i in range(count):
        exchange = Exchange(request_id=f"req-{rng.getrandbits(48):012x}-{i}", transport=rng.choice(("http", "grpc")),
                            server_id="srv-f", api_key_hash="kh-a", model_original="gpt-4o",
                            model_mapped="openai/gpt-4o", provider="openai", stream=rng.random() < 0.5,
                            request={"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {i}"}]})
        exchange.ts = iso(T0 + timedelta(seconds=37 * i))
        exchange.response = {"choices": [{"message": {"role": "assistant", "content": f"answer {i}"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
        lines.append(_serialised(exchange.record()))
    return lines


def _redump(line: bytes, change) -> bytes:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    change(record)
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"  # json: also integers orjson cannot write


def damage(rng: random.Random, lines: list[bytes], how: str) -> list[bytes]:
    lines = list(lines)
    i = rng.randrange(len(lines))
    if how == "cut_last":
        lines[-1] = lines[-1][: rng.randrange(len(lines[-1]))]
    elif how == "not_utf8" and len(lines[i]) > 2:
        at = rng.randrange(len(lines[i]) - 1)
        lines[i] = lines[i][:at] + bytes([rng.choice((0xFF, 0xC3, 0x80, 0xED))]) + lines[i][at + 1:]
    elif how == "nul_run":
        run, at = b"\0" * rng.choice((1, 511, 4096)), rng.randrange(max(1, len(lines[i]) - 1))
        lines[i:i] = [run + b"\n"] if rng.random() < 0.5 else []
        lines[i] = lines[i] if lines[i].startswith(b"\0") else lines[i][:at] + run + b"\n"
    elif how == "wrong_type":
        lines[i] = _redump(lines[i], lambda r: r.__setitem__(rng.choice(FIELDS), rng.choice(ODD_VALUES)))
    elif how == "repeat":
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    elif how == "huge":
        lines[i] = _redump(lines[i], lambda r: r.__setitem__("request", {"messages": [{"content": "w " * 300_000}]}))
    elif how == "crlf":
        lines = [line[:-1] + b"\r\n" if line.endswith(b"\n") else line for line in lines]
    elif how == "blank":
        lines.insert(i, rng.choice((b"\n", b"   \n", b"\r\n", b"\t\n")))
    return lines


def stored(base: Path) -> set[tuple[str, str]]:
    found = set()
    for path in base.rglob("ai_proxy_*.sqlite3"):
        with sqlite3.connect(path) as conn:
            found |= set(conn.execute("SELECT request_id, server_id FROM requests"))
    return found


def intact(line: bytes, data: bytes) -> bool:
    """`line` is in `data` as a whole line (CRLF or not)."""
    return any(b"\n" + form in b"\n" + data for form in (line, line[:-1] + b"\r\n"))


def key(line: bytes) -> tuple[str, str]:
    record = orjson.loads(line)
    return record["request_id"], record["server_id"]


def _idle(path: Path) -> None:
    """As a file no writer touched for an hour: its unfinished last line is a dead writer's."""
    past = path.stat().st_mtime - 3600
    os.utime(path, (past, past))


@pytest.mark.parametrize("seed", SEEDS)
def test_damaged_request_logs_lose_no_record_and_count_every_line(tmp_path, seed):
    rng = random.Random(seed)
    for case in range(CASES):
        original = gateway_lines(rng, rng.randint(3, 12))
        hows = rng.sample(DAMAGES, rng.choice((1, 1, 3)))
        lines = original
        for how in hows:
            lines = damage(rng, lines, how)
        data = b"".join(lines)
        work = tmp_path / f"case-{case}"
        log = work / "logs" / "requests" / "requests-20250905-1.jsonl"
        log.parent.mkdir(parents=True)
        log.write_bytes(data)
        idle = rng.random() < 0.5
        if idle:
            _idle(log)
        where = f"{seed_label(seed)} case {case} {'+'.join(hows)} idle={idle}"
        store = make_store(work / "db", server_id="srv-local")
        first = ingest(store, work / "logs")
        rows = stored(work / "db")
        again = ingest(store, work / "logs")
        store.close()
        assert not again.rows_inserted and stored(work / "db") == rows, f"{where}: a second run added rows"
        lost = [key(line) for line in original if intact(line, data) and key(line) not in rows]
        assert not lost, f"{where}: intact records not stored: {lost}"
        complete, tail = data.count(b"\n"), data[data.rfind(b"\n") + 1:]
        blank = sum(1 for line in data.split(b"\n")[:complete] if not line.strip())
        counted = first.rows_inserted + first.rows_skipped + first.records_corrupt + first.rows_filtered
        assert counted == complete - blank + (idle and bool(tail.strip())), f"{where}: {first.as_dict()}"
        assert len(first.problems) >= first.records_corrupt, f"{where}: a corrupt record not reported"
        assert all(p.startswith(f"{log}:") for p in first.problems), f"{where}: {first.problems}"
        being_written = re.search(rb'"request_id":"([^"]+)"', tail)
        if not idle and being_written and being_written.group(1) not in data[: len(data) - len(tail)]:
            assert (being_written.group(1).decode(), "srv-f") not in rows, f"{where}: a half line was stored"


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as stream:
        stream.write(data)


def _appending_once(path: Path, data: bytes):
    """An ingest progress callback appending `data` to `path` when ingest first reports reading."""
    pending = [data]

    def progress(_read: int) -> None:
        if pending:
            _append(path, pending.pop())

    return progress


@pytest.mark.parametrize("seed", SEEDS)
def test_a_log_changed_between_or_during_runs_loses_and_doubles_nothing(tmp_path, seed):
    rng = random.Random(seed)
    for case in range(CASES):
        lines = gateway_lines(rng, 30)
        head = rng.randint(1, 10)
        work = tmp_path / f"case-{case}"
        log = work / "logs" / "requests-20250905-1.jsonl"
        log.parent.mkdir(parents=True)
        unfinished = lines[head][: rng.randrange(len(lines[head]))] if rng.random() < 0.5 else b""
        log.write_bytes(b"".join(lines[:head]) + unfinished)
        change = rng.choice(("append", "truncate_rewrite", "replace", "cut_mid_line", "finish_line", "grow_during"))
        where = f"{seed_label(seed)} case {case} {change} unfinished={len(unfinished)}"
        expected = set(lines[:head])
        store = make_store(work / "db", server_id="srv-local")
        ingest(store, work / "logs")
        if change == "append":
            _append(log, (b"\n" if unfinished else b"") + b"".join(lines[head + 1:head + 5]))
            expected |= set(lines[head + 1:head + 5])
        elif change == "truncate_rewrite":  # the same inode
            with open(log, "r+b") as stream:
                stream.truncate(0)
                stream.write(b"".join(lines[15:15 + rng.randint(0, 10)]))
            expected |= set(lines[15:25])
        elif change == "replace":  # a new inode under the name
            (work / "new").write_bytes(b"".join(lines[20:20 + rng.randint(1, 10)]))
            os.replace(work / "new", log)
            expected |= set(lines[20:30])
        elif change == "cut_mid_line":
            with open(log, "r+b") as stream:
                stream.truncate(rng.randrange(log.stat().st_size + 1))
            _append(log, b"\n" + b"".join(lines[25:28]))
            expected |= set(lines[25:28])
        elif change == "finish_line" and unfinished:
            _append(log, lines[head][len(unfinished):])
            expected.add(lines[head])
        elif change == "grow_during":
            expected |= set(lines[12:16])
        # The gateway appends while ingest reads: whole lines, then one it is still writing.
        growing = _appending_once(log, b"\n" + b"".join(lines[12:16]) + lines[16][:50])
        ingest(store, work / "logs", progress=growing if change == "grow_during" else None)
        last = ingest(store, work / "logs")
        store.close()
        rows, data = stored(work / "db"), log.read_bytes()
        lost = [key(line) for line in expected if (intact(line, data) or line in lines[:head]) and key(line) not in rows]
        assert not lost, f"{where}: records not stored: {lost}"
        assert not [r for r in rows if "@" in r[0]] and not last.rows_inserted, f"{where}: a record stored twice"
