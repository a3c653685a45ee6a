"""Bundle benchmark: `bundle create` against `tar czf` of the same partition files (same run,
same machine; issue 5's target is at most 1.5x), and `bundle import` throughput in rows/s.

    python test/bench/bench_bundles.py --rows 1000000     (make bench-bundles)
    python test/bench/bench_bundles.py --rows 100000      (a quick run)

The source store is written directly (rows plus their FTS fragments, spread over --days daily
partitions) with the log store's own schema and insert statements, so setup is fast and the
files are exactly what ingestion produces. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from aiproxy.logstore.bundles.create import create_bundle
from aiproxy.logstore.bundles.importer import import_bundle
from aiproxy.logstore.database import create_fts
from aiproxy.logstore.fragments import extract_fragments
from aiproxy.logstore.records import from_gateway_record
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.store import Store
from aiproxy.logstore.writer import INSERT_FRAGMENT, INSERT_REQUEST
from aiproxy.testing.logrecords import chat_record

START = datetime(2025, 9, 1, tzinfo=UTC)
WORDS = ("timeout retry database index query server client request response error cache memory latency python "
         "kubernetes docker network socket thread deploy config token stream model prompt answer function module "
         "release version migration schema table column vector embedding search ranking partition sqlite journal "
         "paris capital history science music weather travel recipe garden finance budget invoice").split()


def store_at(path: Path, server_id: str = "srv-bench") -> Store:
    return Store(LogStoreSettings.from_mapping({"dir": str(path), "server_id": server_id, "grouping_enabled": False}, {}))


def build_source(base: Path, rows: int, days: int, server_id: str = "srv-bench", seed: int = 7) -> int:
    """`rows` requests (~1.5 KB on disk each with the FTS index) over `days` daily partitions; returns bytes on disk."""
    rng = random.Random(seed)
    store = store_at(base, server_id)
    per_day = rows // days
    for day in range(days):
        moment = START + timedelta(days=day)
        db = store.database(store.partition_path(moment.date()))
        create_fts(db)
        batch = []
        for i in range(per_day + (rows % days if day == days - 1 else 0)):
            question = " ".join(rng.choices(WORDS, k=12))
            answer = " ".join(rng.choices(WORDS, k=30))
            record = chat_record([{"role": "user", "content": question}], answer, server_id=server_id,
                                 ts=moment + timedelta(seconds=i * 86400 / per_day), key=f"key-{i % 7}",
                                 request_id=f"req-{day:03d}-{i:07d}")
            batch.append(from_gateway_record(record, server_id))
            if len(batch) == 5000:
                _write(db, batch)
                batch = []
        _write(db, batch)
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return sum(p.stat().st_size for p in base.rglob("ai_proxy_*.sqlite3"))


def _write(db, batch) -> None:
    with db.atomic():
        conn = db.connection()
        conn.executemany(INSERT_REQUEST, [r.as_tuple() for r in batch])
        conn.executemany(INSERT_FRAGMENT, [
            (r.values["request_id"], role, text, r.values["endpoint"], r.values["model_original"] or "",
             r.values["model_mapped"] or "")
            for r in batch for role, text in extract_fragments(orjson.loads(r.values["request_json"]),
                                                               orjson.loads(r.values["response_json"]))
        ])


def timed(func, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=1, help="runs of create and of tar czf (median reported)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bundles-"))
    try:
        print(f"building {args.rows:,} rows over {args.days} daily partitions in {work} ...", flush=True)
        setup_s, size = timed(build_source, work / "src", args.rows, args.days)
        print(f"  {size / 1e6:,.0f} MB of partitions in {setup_s:.0f} s", flush=True)
        source = store_at(work / "src")
        since, to = START.date(), (START + timedelta(days=args.days - 1)).date()
        files = [str(p.path.relative_to(source.base)) for p in source.existing(since, to)]
        tar_times, create_times = [], []
        for run in range(args.repeat):
            tar_out = work / f"tar-{run}.tgz"
            tar_times.append(timed(subprocess.run, ["tar", "czf", str(tar_out), "-C", str(source.base), *files],
                                   check=True)[0])
            create_times.append(timed(create_bundle, source, since, to, work / f"bundle-{run}.tgz")[0])
            tar_size = tar_out.stat().st_size
            if run:
                (work / f"bundle-{run}.tgz").unlink()
            tar_out.unlink()
        tar_s, create_s = statistics.median(tar_times), statistics.median(create_times)
        bundle = work / "bundle-0.tgz"
        import_s, imported = timed(import_bundle, bundle, store_at(work / "dest"))
        reimport_s, again = timed(import_bundle, bundle, store_at(work / "dest"))
        build_source(work / "held", args.days * 100, args.days, server_id="srv-other")  # every day already held
        merge_s, merged = timed(import_bundle, bundle, store_at(work / "held"))
        rows = [
            ("partitions", f"{len(files)} files, {size / 1e6:,.0f} MB, {args.rows:,} rows"),
            ("tar czf (median)", f"{tar_s:.2f} s  ({size / 1e6 / tar_s:.0f} MB/s, archive {tar_size / 1e6:.0f} MB)"),
            ("bundle create (median)", f"{create_s:.2f} s  ({size / 1e6 / create_s:.0f} MB/s, "
                                       f"archive {bundle.stat().st_size / 1e6:.0f} MB)"),
            ("create / tar", f"{create_s / tar_s:.2f}x  (target <= 1.5x)"),
            ("bundle import (empty store)", f"{import_s:.1f} s  {imported.rows_imported / import_s:,.0f} rows/s "
                                            f"({imported.rows_imported:,} rows)"),
            ("bundle import (days held: row merge)", f"{merge_s:.1f} s  {merged.rows_imported / merge_s:,.0f} rows/s"),
            ("re-import (all duplicates)", f"{reimport_s:.1f} s  {again.rows_imported} rows added, "
                                           f"{again.rows_skipped:,} skipped"),
        ]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
