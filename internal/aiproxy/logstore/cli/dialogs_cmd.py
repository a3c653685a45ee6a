"""`logdb dialogs assign|clear|list`: dialog grouping."""

from __future__ import annotations

import argparse

from aiproxy.logstore import dialogs
from aiproxy.logstore.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    call,
    dialog_line,
    emit,
    exit_status,
    filter_message,
    filter_options,
    json_option,
    open_store,
    paging_options,
    range_options,
    remote_options,
    store_options,
)
from aiproxy.logstore.damage import Unreadable
from aiproxypb.v1 import logs_pb2


def _window(text: str) -> str:
    """--window as the seed reads it (an unparsable one is 30m), but one too long to compute with
    is a usage error rather than a traceback."""
    try:
        dialogs.parse_window(text, strict=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _report(args: argparse.Namespace, done: dict[str, int], unreadable: Unreadable, word: str) -> int:
    """`<path> <word>=N` per partition in path order; one that cannot be read or changed is
    `<path> error=<error>` (in JSON `{"error": …}`) while the others are still processed: exit 1."""
    result: dict[str, object] = dict(done)
    result.update({str(e.path): {"error": e.reason} for e in unreadable.errors.values()})
    result = dict(sorted(result.items()))

    def line(path: str, value) -> str:
        return f"{path} error={value['error']}" if isinstance(value, dict) else f"{path} {word}={value}"

    emit(args, result, lambda: "\n".join(line(p, v) for p, v in result.items()) or "no partitions in range")
    return EXIT_FAILED if unreadable else EXIT_OK


def run_assign(args: argparse.Namespace) -> int:
    unreadable = Unreadable()
    with open_store(args) as (store, _):
        done = dialogs.assign(store, args.since, args.to, args.window, unreadable=unreadable)
    return _report(args, done, unreadable, "updated")


def run_clear(args: argparse.Namespace) -> int:
    unreadable = Unreadable()
    with open_store(args) as (store, _):
        done = dialogs.clear(store, args.since, args.to, unreadable=unreadable)
    return _report(args, done, unreadable, "cleared")


def run_list(args: argparse.Namespace) -> int:
    request = logs_pb2.ListDialogsRequest(filter=filter_message(args), limit=args.limit, cursor=args.cursor or "")
    result = call(args, "ListDialogs", request)

    def text() -> str:
        rows = [dialog_line(d) for d in result["dialogs"]]
        if result["next_cursor"]:
            rows.append(f"next: --cursor {result['next_cursor']}")
        return "\n".join(rows) or "no dialogs"

    emit(args, result, text)
    return exit_status(result)


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
    filter_options(listing)
    paging_options(listing)
    json_option(listing)
    remote_options(listing)
    listing.set_defaults(func=run_list)
