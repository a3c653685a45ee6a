"""`logdb search`, `logdb show`, `logdb stats`: reading the store (locally or --remote)."""

from __future__ import annotations

import argparse
import json

from aiproxy.logstore.cli.common import (
    call,
    call_all_pages,
    dialog_line,
    emit,
    exit_status,
    filter_message,
    filter_options,
    json_option,
    paging_options,
    range_options,
    remote_options,
    request_line,
    store_options,
    text,
)
from aiproxy.logstore.fragments import transcript
from aiproxy.logstore.protomap import JSON_TEXT_FIELDS
from aiproxypb.v1 import logs_pb2


def run_search(args: argparse.Namespace) -> int:
    request = logs_pb2.SearchRequestsRequest(
        q=" ".join(args.query), filter=filter_message(args), limit=args.limit, cursor=args.cursor or ""
    )
    result = call(args, "SearchRequests", request)

    def text() -> str:
        rows = []
        for hit in result["results"]:
            head = request_line(hit)
            rows.append(f"{head}  {hit['dialog_id']}\n    {hit['snippet']}" if hit["snippet"] else head)
        if result["next_cursor"]:
            rows.append(f"next: --cursor {result['next_cursor']}")
        return "\n".join(rows) or "no matches"

    emit(args, result, text)
    # 1 when partitions were left out (unreadable, or without the full-text index a ranked search
    # needs: the reply's warnings say which): the answer is incomplete
    return exit_status(result)


def _said(role: str, text: str, width: int | None = None) -> str:
    text = " ".join(text.split())
    return f"    {role}: {text if width is None or len(text) <= width else text[: width - 1] + '…'}"


def _exchange_lines(record: dict, *, last_asked: bool = False, width: int | None = None) -> list[str]:
    """A request as text: its line, every message, its error (--json has the whole record). A dialog
    turn passes last_asked (it added only the last message sent) and a width to clip lines to. A
    damaged row's text that is not JSON is shown as it is, under its column's name."""
    said = transcript(record.get("request"), None, last_sent=last_asked) + transcript(None, record.get("response"))
    lines = [request_line(record["summary"]), *(_said(role, text, width) for role, text in said)]
    lines += [_said(f"{column} (not JSON)", record[column], width) for column in JSON_TEXT_FIELDS if column in record]
    return lines + ([_said("error", json.dumps(record["error"]), width)] if record.get("error") else [])


def run_show(args: argparse.Namespace) -> int:
    if args.dialog:
        result = call_all_pages(args, "GetDialog", logs_pb2.GetDialogRequest(dialog_id=args.id), "turns")
        emit(args, result, lambda: "\n".join([dialog_line(result["summary"]), *(
            line for turn in result["turns"] for line in _exchange_lines(turn, last_asked=True, width=200))]))
    else:
        result = call(args, "GetRequest", logs_pb2.GetRequestRequest(request_id=args.id))
        emit(args, result, lambda: "\n".join(_exchange_lines(result)))
    return exit_status(result)


def run_stats(args: argparse.Namespace) -> int:
    result = call(args, "Stats", logs_pb2.StatsRequest(since=str(args.since or ""), to=str(args.to or "")))
    emit(args, result)
    return exit_status(result)


def _query_word(text: str) -> bool:
    """`-banana`: a word to exclude (`alpha -banana` is alpha NOT banana), not an option."""
    return len(text) > 1 and text[0] == "-" and text[1] != "-"


class _QueryWords:
    """For `search`: a `-word` that is not one of its options is query text wherever it stands
    (`logdb search alpha -banana --json`), where argparse would call it an unknown option. Real
    options, `--anything` unknown, and `--` keep their meaning."""

    def _parse_optional(self, arg_string):
        if _query_word(arg_string) and arg_string not in self._option_string_actions:
            return None  # a positional: part of the query
        return super()._parse_optional(arg_string)

    def parse_known_args(self, args=None, namespace=None):
        # The query's words after an option come back as extras (a positional takes one run of
        # words): they belong to the query, in order; anything else is unknown, as everywhere.
        namespace, extras = argparse.ArgumentParser.parse_known_args(self, args, namespace)
        unknown = [word for word in extras if self._parse_optional(word) is not None]
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        try:
            namespace.query = [*(namespace.query or []), *map(text, extras)]
        except argparse.ArgumentTypeError as exc:
            self.error(f"argument query: {exc}")
        return namespace, []


def register(subparsers) -> None:
    search = subparsers.add_parser(
        "search",
        help="full-text search (FTS5 syntax) ranked by bm25",
        description="Search requests. FTS5 syntax: AND OR NOT, NEAR(a b, 5), \"phrases\", prefix*, content:term. "
        "No query lists the newest requests. An invalid query exits with 2; a text search over partitions in range "
        "without a full-text index (after `fts drop`), which it could not search, exits with 1 and says so.",
    )
    search.__class__ = type("SearchParser", (_QueryWords, type(search)), {})
    search.add_argument("query", nargs="*", type=text, help="FTS5 query; `alpha -banana` excludes banana (a -word is query text)")
    filter_options(search)
    search.add_argument("--dialog", type=text, help="dialog id")
    paging_options(search)
    search.set_defaults(func=run_search)
    show = subparsers.add_parser("show", help="one request (or --dialog: a dialog's turns)", description="Show a stored request.")
    show.add_argument("id", type=text, help="request id (or dialog id with --dialog)")
    show.add_argument("--dialog", action="store_true", help="the id is a dialog id: print its turns in order")
    show.set_defaults(func=run_show)
    stats = subparsers.add_parser("stats", help="store statistics", description="Partitions, rows, models, statuses.")
    range_options(stats)
    stats.set_defaults(func=run_stats)
    for parser in (search, show, stats):
        store_options(parser)
        json_option(parser)
        remote_options(parser)
    range_options(search)
