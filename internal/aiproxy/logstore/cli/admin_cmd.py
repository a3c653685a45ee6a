"""`logdb init` and `logdb merge` (the seed's commands, outputs and exit codes)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiproxy.logstore.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    day,
    emit,
    json_option,
    open_store,
    require_path,
    store_options,
)
from aiproxy.logstore.damage import PartitionUnreadable, control_file
from aiproxy.logstore.database import create_fts
from aiproxy.logstore.merge import MergeError, merge
from aiproxy.logstore.partitions import control_path, utc_today


def run_init(args: argparse.Namespace) -> int:
    """The partition's path and its integrity_check result; a file that cannot be read (or is not
    ok) is not changed: its error is the result, with what to do on stderr, and the exit code 1."""
    with open_store(args, existing=False) as (store, _):
        path = store.partition_path(args.date or utc_today())
        with control_file(control_path(store.base)):
            store.control()
        try:
            with store.connected(path) as db:
                integrity = db.execute_sql("PRAGMA integrity_check").fetchone()[0]
                if integrity == "ok" and store.settings.fts_enabled:  # as ingest would on its first row
                    create_fts(db)
        except PartitionUnreadable as exc:
            integrity = exc.reason
            print(f"logdb: {exc.warning(local=True).removeprefix('skipped ')}", file=sys.stderr)
    emit(args, {"path": str(path), "integrity": integrity}, lambda: f"{path}\n{integrity}")
    return EXIT_OK if integrity == "ok" else EXIT_FAILED


def run_merge(args: argparse.Namespace) -> int:
    source = require_path(Path(args.source), "directory", "check --from")
    with open_store(args, existing=False) as (store, _):  # only for the settings
        try:
            result = merge(source, Path(args.dest), store.settings)
        except MergeError as exc:
            print(f"logdb: {exc}", file=sys.stderr)
            return EXIT_FAILED
    emit(
        args,
        result,
        lambda: f"sources={result['sources']} total_requests={result['total_requests']} integrity={result['integrity']}",
    )
    return EXIT_OK if result["integrity"] == "ok" else EXIT_FAILED


def register(subparsers) -> None:
    init = subparsers.add_parser(
        "init", help="create a day's partition and the control DB", description="Create the partition of --date (UTC)."
    )
    init.add_argument("--date", type=day, metavar="YYYY-MM-DD", help="UTC day (default: today, UTC)")
    store_options(init)
    json_option(init)
    init.set_defaults(func=run_init)
    merge_parser = subparsers.add_parser(
        "merge",
        help="merge every partition under a directory into one file",
        description="Copy servers, requests and ingest_sources from every partition file (ai_proxy_*.sqlite3) under "
        "--from (not the target, nothing under incoming/) into --to (an existing one is merged into), then index "
        "the merged rows; written under a temporary name and renamed over --to when complete.",
    )
    merge_parser.add_argument("--from", dest="source", required=True, metavar="DIR")
    merge_parser.add_argument("--to", dest="dest", required=True, metavar="FILE")
    json_option(merge_parser)
    merge_parser.set_defaults(func=run_merge)
