"""`logdb ingest`: read request logs into the store (the seed's flags)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiproxy.logstore.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    call,
    exit_status,
    json_option,
    open_store,
    range_options,
    remote_options,
    require_path,
    store_options,
)
from aiproxy.logstore.cli.progress import ProgressBar
from aiproxy.logstore.ingest import discover_sources, ingest
from aiproxypb.v1 import logs_pb2


def run(args: argparse.Namespace) -> int:
    if args.remote:
        request = logs_pb2.IngestRequest(since=str(args.since or ""), to=str(args.to or ""))
        result = call(args, "Ingest", request)  # partitions the server could not write: warnings
        print(json.dumps(result))
        return exit_status(result)
    with open_store(args, existing=False) as (store, log_dir):
        source = require_path(Path(args.source or log_dir), "log file or directory", "check --from, or LOG_DIR")
        files = discover_sources(source)
        with ProgressBar(sum(f.stat().st_size for f in files), "ingest") as bar:
            report = ingest(store, source, since=args.since, to=args.to, progress=bar.advance, files=files)
    summary = report.as_dict()
    if not args.json:
        print(f"ingest_elapsed_s={summary['elapsed_s']} rows_inserted={report.rows_inserted} rps={summary['rows_per_s']}")
    print(json.dumps(summary, ensure_ascii=False))
    for line in report.partition_problems():
        print(f"logdb: {line}", file=sys.stderr)
    return EXIT_FAILED if report.unreadable else EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="ingest request logs (*.jsonl and the seed's *.log) into the store",
        description="Ingest request logs incrementally: per-file checkpoints, corrupt records reported and "
        "skipped, --since/--to limit what is inserted without making later runs skip anything.",
    )
    parser.add_argument("--from", dest="source", metavar="DIR", help="log directory or file (default: LOG_DIR, logs)")
    store_options(parser)
    range_options(parser)
    json_option(parser)
    remote_options(parser)
    parser.set_defaults(func=run)
