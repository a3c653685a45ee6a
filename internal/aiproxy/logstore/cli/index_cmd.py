"""`logdb fts build|rebuild|drop`: FTS5 index maintenance for operators."""

from __future__ import annotations

import argparse

from aiproxy.logstore import fts
from aiproxy.logstore.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    call,
    emit,
    json_option,
    open_store,
    range_options,
    remote_options,
    store_options,
)
from aiproxypb.v1 import logs_pb2

_ACTIONS = {
    "build": logs_pb2.BuildIndexRequest.BUILD,
    "rebuild": logs_pb2.BuildIndexRequest.REBUILD,
    "drop": logs_pb2.BuildIndexRequest.DROP,
}


def _drop_locally(args: argparse.Namespace) -> int:
    """The seed's `fts drop`: every partition in range, `<path> fts dropped` (`no fts` when it had
    none) or `<path> drop_error=<error>` for one that cannot be changed; exit 1 if any could not."""
    errors: dict[str, str] = {}
    with open_store(args) as (store, _):
        dropped = fts.drop(store, args.since, args.to, on_error=lambda path, exc: errors.__setitem__(path, str(exc)))
    partitions = [{"path": p, "indexed": 0, "skipped": 0, "dropped": d} for p, d in dropped.items()]
    partitions += [{"path": p, "indexed": 0, "skipped": 0, "dropped": False, "error": e} for p, e in errors.items()]
    partitions.sort(key=lambda part: part["path"])

    def line(part: dict) -> str:
        if "error" in part:
            return f"{part['path']} drop_error={part['error']}"
        return f"{part['path']} fts dropped" if part["dropped"] else f"{part['path']} no fts"

    emit(args, {"partitions": partitions}, lambda: "\n".join(map(line, partitions)) or "no partitions in range")
    return EXIT_FAILED if errors else EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.action == "drop" and not args.remote:
        return _drop_locally(args)
    request = logs_pb2.BuildIndexRequest(action=_ACTIONS[args.action], since=str(args.since or ""), to=str(args.to or ""))
    result = call(args, "BuildIndex", request)

    def text() -> str:
        lines = []
        for part in result["partitions"]:
            if args.action == "drop":
                lines.append(f"{part['path']} fts dropped" if part["dropped"] else f"{part['path']} no fts")
            else:
                lines.append(f"{part['path']} indexed={part['indexed']} skipped={part['skipped']}")
        return "\n".join(lines) or "no partitions in range"

    emit(args, result, text)
    return EXIT_OK


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
