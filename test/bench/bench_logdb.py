"""Log store benchmark: ingest rate with FTS against a plain-sqlite3 baseline, search latency
over 30 daily partitions against one unpartitioned FTS5 table, and peak memory.

    python test/bench/bench_logdb.py --n 1000000     (make bench-logdb)

Records are synthetic gateway request-log lines (~2 KB: multi-turn conversations, several
models and keys) spread over 30 days. Each measured phase runs in its own process so peak RSS
belongs to that phase. Prints a table; asserts nothing (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from aiproxy.logstore import search as search_mod
from aiproxy.logstore.database import open_database
from aiproxy.logstore.dialogs import assign_pending
from aiproxy.logstore.fragments import extract_fragments
from aiproxy.logstore.ingest import ingest
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.store import Store
from aiproxy.logstore.writer import INSERT_FRAGMENT, INSERT_REQUEST
from aiproxy.testing.logrecords import chat_record

DAYS = 30
START = datetime(2025, 9, 1, tzinfo=UTC)
MODELS = [("gpt-4o", "openai/gpt-4o"), ("claude", "anthropic/claude-3.5-sonnet"), ("gemini-flash", "gemini-2.0-flash"),
          ("llama", "meta-llama/llama-3.1-70b"), ("deepseek", "deepseek/deepseek-chat")]
KEYS = [f"key-{i}" for i in range(12)]
TOPICS = ("timeout retry database index query server client request response error cache memory latency "
          "python rust golang kubernetes docker network socket thread process deploy config token stream "
          "model prompt answer function class module package release version migration schema table column "
          "machine learning training dataset vector embedding search ranking partition sqlite journal wal "
          "france paris capital history science music weather travel recipe garden finance budget invoice").split()
QUERIES = ["timeout", "machine learning", "error AND retry", '"database index"', "kubernetes OR docker",
           "NEAR(timeout retry, 5)", "partit*", "content:invoice"]


def _vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    """Zipf-distributed words: 4,000 filler words with the topic words spread over ranks 40..2,000,
    so a query term matches a realistic share of the records, not nearly all of them."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "de", "pa", "zu", "ri", "be", "go", "an", "el"]
    words = list(dict.fromkeys("".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(6000)))[:4000]
    for i, topic in enumerate(TOPICS):
        words.insert(40 + i * 20, topic)
    return words, [1 / (rank + 1) for rank in range(len(words))]


def _sentence(rng: random.Random, vocabulary: tuple[list[str], list[float]], words: int) -> str:
    return " ".join(rng.choices(vocabulary[0], vocabulary[1], k=words)).capitalize() + "."


def generate(logs: Path, n: int, seed: int = 7) -> int:
    """Write n records over DAYS days; returns bytes written."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    pool = [_sentence(rng, vocabulary, rng.randint(8, 24)) for _ in range(20000)]
    per_day = n // DAYS
    written = 0
    made = 0
    for d in range(DAYS):
        day = START + timedelta(days=d)
        count = per_day if d < DAYS - 1 else n - made
        path = logs / "requests" / f"requests-{day:%Y%m%d}-1.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            i = 0
            while i < count:
                model, mapped = rng.choice(MODELS)
                key = rng.choice(KEYS)
                history: list[dict] = [{"role": "system", "content": "You are a helpful assistant. " + rng.choice(pool)}]
                for _turn in range(min(rng.randint(1, 6), count - i)):
                    history.append({"role": "user", "content": " ".join(rng.choices(pool, k=3))})
                    answer = " ".join(rng.choices(pool, k=5))
                    moment = day + timedelta(seconds=int(86400 * i / max(1, count)))
                    record = chat_record(list(history[-5:]), answer, ts=moment, key=key, model=model, mapped=mapped)
                    line = orjson.dumps(record) + b"\n"
                    out.write(line)
                    written += len(line)
                    history.append({"role": "assistant", "content": answer})
                    i += 1
            made += count
    return written


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_ingest(work: Path, memory_mb: int) -> dict:
    settings = LogStoreSettings.from_mapping(
        {"dir": str(work / "db"), "fts_enabled": True, "grouping_enabled": False, "memory_mb": memory_mb}, {}
    )
    store = Store(settings)
    started = time.perf_counter()
    report = ingest(store, work / "logs")
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    assign_pending(store)
    dialogs_s = time.perf_counter() - started
    return {"rows": report.rows_inserted, "seconds": elapsed, "dialogs_s": dialogs_s, "peak_mb": _peak_mb()}


def phase_baseline(work: Path, batch_rows: int) -> dict:
    """Parse each line, executemany into the same tables and the FTS table, plain sqlite3."""
    path = work / "single.sqlite3"
    open_database(path, LogStoreSettings()).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS request_text_index USING fts5(request_id UNINDEXED, role, content,"
        " endpoint, model_original, model_mapped, tokenize='unicode61')"
    )
    columns = [c for c in INSERT_REQUEST.split("(")[1].split(")")[0].split(", ")]
    started = time.perf_counter()
    rows = 0
    for file in sorted((work / "logs" / "requests").glob("*.jsonl")):
        with open(file, "rb") as stream:
            batch, fts = [], []
            for line in stream:
                rec = orjson.loads(line)
                usage = rec.get("usage") or {}
                values = {
                    **rec, "ts": int(datetime.fromisoformat(rec["ts"]).timestamp()), "ts_iso": rec["ts"],
                    "request_json": orjson.dumps(rec["request"]).decode(),
                    "response_json": orjson.dumps(rec["response"]).decode(),
                    "stream": int(rec["stream"]), "error": None, **usage,
                }
                batch.append(tuple(values.get(c) for c in columns))
                fts.extend((rec["request_id"], role, text, rec["endpoint"], rec["model_original"], rec["model_mapped"])
                           for role, text in extract_fragments(rec["request"], rec["response"]))
                if len(batch) >= batch_rows:
                    rows += _baseline_flush(conn, batch, fts)
                    batch, fts = [], []
            rows += _baseline_flush(conn, batch, fts)
    elapsed = time.perf_counter() - started
    conn.close()
    return {"rows": rows, "seconds": elapsed, "peak_mb": _peak_mb()}


def _baseline_flush(conn: sqlite3.Connection, batch: list, fts: list) -> int:
    conn.execute("BEGIN")
    conn.executemany(INSERT_REQUEST, batch)
    conn.executemany(INSERT_FRAGMENT, fts)
    conn.execute("COMMIT")
    return len(batch)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def phase_search(work: Path, reps: int) -> dict:
    store = Store(LogStoreSettings.from_mapping({"dir": str(work / "db")}, {}))
    single = open_database(work / "single.sqlite3", LogStoreSettings())
    filters = search_mod.SearchFilters()
    partitioned, flat = [], []
    for _ in range(reps):
        for query in QUERIES:
            started = time.perf_counter()
            search_mod.search(store, query, limit=20)
            partitioned.append(time.perf_counter() - started)
            started = time.perf_counter()
            search_mod.validate_query(query)
            for score, request_id, rowid in search_mod.ranked_hits(single, query, filters, None, 20):
                search_mod.ranked_hit(single, query, score, request_id, rowid)
            flat.append(time.perf_counter() - started)
    p50, p99 = _percentiles(partitioned)
    s50, s99 = _percentiles(flat)
    return {"partitioned_p50_ms": p50 * 1e3, "partitioned_p99_ms": p99 * 1e3, "single_p50_ms": s50 * 1e3,
            "single_p99_ms": s99 * 1e3, "partitions": len(store.existing()), "peak_mb": _peak_mb()}


def _run_phase(name: str, work: Path, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--work", str(work), "--memory-mb", str(args.memory_mb),
         "--reps", str(args.reps)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate (default 1,000,000)")
    parser.add_argument("--memory-mb", type=int, default=256, help="LOGDB_MEMORY_MB for the ingest")
    parser.add_argument("--reps", type=int, default=10, help="repetitions of each search query")
    parser.add_argument("--work", help="work directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--phase", choices=["ingest", "baseline", "search"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        work = Path(args.work)
        result = {"ingest": lambda: phase_ingest(work, args.memory_mb), "baseline": lambda: phase_baseline(work, 2000),
                  "search": lambda: phase_search(work, args.reps)}[args.phase]()
        print(json.dumps(result))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-logdb-"))
    try:
        started = time.perf_counter()
        size = generate(work / "logs", args.n)
        print(f"generated {args.n:,} records, {size / 2**20:,.0f} MiB ({size / args.n:,.0f} B/record) "
              f"in {time.perf_counter() - started:,.0f} s", file=sys.stderr)
        mine = _run_phase("ingest", work, args)
        base = _run_phase("baseline", work, args)
        found = _run_phase("search", work, args)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    rate, base_rate = mine["rows"] / mine["seconds"], base["rows"] / base["seconds"]
    rows = [
        ("records", f"{args.n:,}", "", ""),
        ("ingest rec/s (FTS on)", f"{rate:,.0f}", f"baseline {base_rate:,.0f}", f"{rate / base_rate:.0%} (target >= 70%)"),
        ("ingest peak RSS MiB", f"{mine['peak_mb']:,.0f}", f"baseline {base['peak_mb']:,.0f}",
         f"LOGDB_MEMORY_MB={args.memory_mb}"),
        ("dialog threading s", f"{mine['dialogs_s']:,.1f}", "", f"{mine['rows'] / max(mine['dialogs_s'], 1e-9):,.0f} rows/s"),
        ("search p50 ms", f"{found['partitioned_p50_ms']:.1f}", f"single table {found['single_p50_ms']:.1f}",
         f"{found['partitioned_p50_ms'] / found['single_p50_ms']:.2f}x (target <= 2x)"),
        ("search p99 ms", f"{found['partitioned_p99_ms']:.1f}", f"single table {found['single_p99_ms']:.1f}",
         f"{found['partitioned_p99_ms'] / found['single_p99_ms']:.2f}x"),
        ("partitions searched", str(found["partitions"]), "", ""),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
