"""`logdb dialogs assign|clear|list`: dialog grouping."""

from __future__ import annotations

import argparse

from aiproxy.logstore import dialogs
from aiproxy.logstore.cli.common import (
    EXIT_OK,
    call,
    dialog_line,
    emit,
    filter_message,
    json_option,
    open_store,
    paging_options,
    range_options,
    remote_options,
    store_options,
)
from aiproxypb.v1 import logs_pb2


def _window(text: str) -> str:
    """--window as the seed reads it (an unparsable one is 30m), but one too long to compute with
    is a usage error rather than a traceback."""
    try:
        dialogs.parse_window(text, strict=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def run_assign(args: argparse.Namespace) -> int:
    with open_store(args) as (store, _):
        result = dialogs.assign(store, args.since, args.to, args.window)
    emit(args, result, lambda: "\n".join(f"{p} updated={n}" for p, n in result.items()) or "no partitions in range")
    return EXIT_OK


def run_clear(args: argparse.Namespace) -> int:
    with open_store(args) as (store, _):
        result = dialogs.clear(store, args.since, args.to)
    emit(args, result, lambda: "\n".join(f"{p} cleared={n}" for p, n in result.items()) or "no partitions in range")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    request = logs_pb2.ListDialogsRequest(filter=filter_message(args), limit=args.limit, cursor=args.cursor or "")
    result = call(args, "ListDialogs", request)

    def text() -> str:
        rows = [dialog_line(d) for d in result["dialogs"]]
        if result["next_cursor"]:
            rows.append(f"next: --cursor {result['next_cursor']}")
        return "\n".join(rows) or "no dialogs"

    emit(args, result, text)
    return EXIT_OK


def register(subparsers) -> None:
    group = subparsers.add_parser("dialogs", help="dialog grouping", description="Dialog grouping.")
    actions = group.add_subparsers(dest="action", required=True, metavar="{assign,clear,list}")
    assign = actions.add_parser(
        "assign",
        help="(re)compute dialogs: threading by content, the --window rule as fallback",
        description="Recompute dialog ids in range; deterministic, so re-running updates nothing.",
    )
    assign.add_argument("--window", type=_window, help="fallback gap that splits dialogs: Ns, Nm, Nh or seconds (default 30m)")
    clear = actions.add_parser("clear", help="remove dialog ids in range", description="Remove dialog ids in range.")
    for parser, func in ((assign, run_assign), (clear, run_clear)):
        store_options(parser)
        range_options(parser)
        json_option(parser)
        parser.set_defaults(func=func)
    listing = actions.add_parser("list", help="dialogs active in range, newest first", description="List dialogs.")
    store_options(listing)
    range_options(listing)
    listing.add_argument("--model")
    listing.add_argument("--key-hash", dest="api_key_hash")
    paging_options(listing)
    json_option(listing)
    remote_options(listing)
    listing.set_defaults(func=run_list)
