"""`logdb fts build|rebuild|drop`: FTS5 index maintenance for operators."""

from __future__ import annotations

import argparse

from aiproxy.logstore import fts
from aiproxy.logstore.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    call,
    emit,
    exit_status,
    json_option,
    open_store,
    range_options,
    remote_options,
    store_options,
)
from aiproxy.logstore.damage import Unreadable
from aiproxypb.v1 import logs_pb2

_ACTIONS = {
    "build": logs_pb2.BuildIndexRequest.BUILD,
    "rebuild": logs_pb2.BuildIndexRequest.REBUILD,
    "drop": logs_pb2.BuildIndexRequest.DROP,
}


def _locally(args: argparse.Namespace) -> int:
    """Every partition in range, in path order: `<path> indexed=N skipped=M` (build, rebuild) or
    the seed's `<path> fts dropped` / `<path> no fts` (drop); a partition that cannot be read or
    changed is `<path> error=<error>` (`drop_error=` for drop, as the seed printed it) while the
    others are still processed, and the exit code is then 1."""
    unreadable = Unreadable()
    with open_store(args) as (store, _):
        if args.action == "drop":
            done = fts.drop(store, args.since, args.to, unreadable=unreadable)
            partitions = [{"path": p, "indexed": 0, "skipped": 0, "dropped": d} for p, d in done.items()]
        else:
            built = fts.build(store, args.since, args.to, rebuild=args.action == "rebuild", unreadable=unreadable)
            partitions = [{"path": p, "dropped": False, **counts} for p, counts in built.items()]
    partitions += [{"path": str(e.path), "indexed": 0, "skipped": 0, "dropped": False, "error": e.reason}
                   for e in unreadable.errors.values()]  # never among the results fts returned
    partitions.sort(key=lambda part: part["path"])
    emit(args, {"partitions": partitions}, lambda: "\n".join(_line(args.action, p) for p in partitions)
         or "no partitions in range")
    return EXIT_FAILED if unreadable else EXIT_OK


def _line(action: str, part: dict) -> str:
    if "error" in part:
        return f"{part['path']} {'drop_error' if action == 'drop' else 'error'}={part['error']}"
    if action == "drop":
        return f"{part['path']} fts dropped" if part["dropped"] else f"{part['path']} no fts"
    return f"{part['path']} indexed={part['indexed']} skipped={part['skipped']}"


def run(args: argparse.Namespace) -> int:
    if not args.remote:
        return _locally(args)
    request = logs_pb2.BuildIndexRequest(action=_ACTIONS[args.action], since=str(args.since or ""), to=str(args.to or ""))
    result = call(args, "BuildIndex", request)  # partitions the server could not change: warnings
    emit(args, result, lambda: "\n".join(_line(args.action, p) for p in result["partitions"]) or "no partitions in range")
    return exit_status(result)


def register(subparsers) -> None:
    fts = subparsers.add_parser("fts", help="full-text index maintenance", description="FTS5 index maintenance.")
    actions = fts.add_subparsers(dest="action", required=True, metavar="{build,rebuild,drop}")
    helps = {
        "build": "index rows not indexed yet (ingest indexes new rows itself)",
        "rebuild": "drop and re-create the index from the stored rows",
        "drop": "drop the index (rows stay)",
    }
    for name, text in helps.items():
        parser = actions.add_parser(name, help=text, description=text)
        store_options(parser)
        range_options(parser)
        json_option(parser)
        remote_options(parser)
        parser.set_defaults(func=run)
