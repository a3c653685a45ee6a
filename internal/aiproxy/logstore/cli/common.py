"""What every `logdb` command shares: settings, the store, local-or-remote LogService calls,
output (--json) and exit codes (0 ok, 1 failure, not found or a partition left out, 2 usage or
invalid query)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from aiproxy.logstore.api import LogApi
from aiproxy.logstore.damage import Unreadable
from aiproxy.logstore.partitions import parse_day
from aiproxy.logstore.protomap import INT32_MAX, message_to_json
from aiproxy.logstore.search import MAX_LIMIT
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.logstore.store import Store
from aiproxypb.v1 import logs_pb2

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that cannot work as given (a path that does not exist): exit 2."""


def require_path(path: Path, what: str, hint: str) -> Path:
    """`path` when it exists; else a UsageError naming it, so a typo is never an empty success."""
    if not path.exists():
        raise UsageError(f"{path}: no such {what} ({hint})")
    return path


def load_config() -> tuple[dict, str]:
    """(LOGDB_* mapping, log dir) read as the gateway reads them: settings file < .env < environment.
    Settings it cannot read stop the command with the gateway's line: falling back to the environment
    alone read another LOGDB_DIR than the gateway writes (the file's `logdb_dir`, `.env`'s LOGDB_DIR)."""
    from aiproxy.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise UsageError(f"{exc} (logdb reads the gateway's settings for LOGDB_* and LOG_DIR)") from None
    return dict(settings.logdb), settings.log_dir


def text(value: str) -> str:
    """An argument a request carries as text (a query, a filter, an id, a cursor). Bytes that are not
    UTF-8 (a Latin-1 terminal's é) reach Python as lone surrogates, which no request can carry."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"{os.fsencode(value)!r} is not UTF-8: set the terminal to UTF-8 (LANG=C.UTF-8) and type it again"
        ) from None
    return value


def day(text: str):
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def store_options(parser: argparse.ArgumentParser, *, out_help: str = "log store directory (LOGDB_DIR, logs/db)") -> None:
    parser.add_argument("--out", "--db", dest="out", metavar="DIR", help=out_help)


def range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=day, metavar="YYYY-MM-DD", help="first UTC day (inclusive)")
    parser.add_argument("--to", type=day, metavar="YYYY-MM-DD", help="last UTC day (inclusive)")


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:  # the store would quietly make -5 into 1 and 0 into 20
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to {MAX_LIMIT}")
    return value




def status_code(text: str) -> int:
    """--status: an HTTP status; a number the filter cannot hold is a usage error, not a traceback."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an HTTP status code (a number such as 500)") from None
    if not 0 <= value <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: use an HTTP status code from 0 to {INT32_MAX}")
    return value


def filter_options(parser: argparse.ArgumentParser) -> None:
    """The LogFilter fields a listing takes besides the day range (filter_message reads them)."""
    parser.add_argument("--model", type=text, help="model_original or model_mapped, in any case")
    parser.add_argument("--provider", type=text)
    parser.add_argument("--key-hash", type=text, dest="api_key_hash", help="api_key_hash")
    parser.add_argument("--status", type=status_code, help="HTTP status code")


def paging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_page_size, default=20, metavar=f"1..{MAX_LIMIT}", help="page size (default 20)")
    parser.add_argument("--cursor", type=text, help="next_cursor of the previous page")


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def remote_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", metavar="HOST:PORT",
                        help="ask this LogService instead of reading local files (also grpc:// or grpcs:// URLs)")
    parser.add_argument("--api-key", help="admin key for --remote (default: env AIPROXY_API_KEY)")
    parser.add_argument("--tls", action="store_true", help="--remote speaks TLS (system CA roots)")
    parser.add_argument("--ca-file", metavar="PEM", help="--remote speaks TLS, trusting these CA certificates")
    tls_identity_options(parser, "--remote (implies TLS)")


def tls_identity_options(parser: argparse.ArgumentParser, where: str) -> None:
    """For a gateway whose gRPC listener requires a client certificate (its TLS_CLIENT_CA_FILE), or
    whose certificate names another host than the one dialled."""
    parser.add_argument("--client-cert", metavar="PEM",
                        help=f"client certificate (chain) to present to {where} (default: env AIPROXY_CLIENT_CERT)")
    parser.add_argument("--client-key", metavar="PEM",
                        help="private key of --client-cert, unencrypted (default: env AIPROXY_CLIENT_KEY)")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help=f"the name {where}'s certificate must carry, when it is not the host dialled"
                             " (an IP address, a tunnel)")


def tls_files(args: argparse.Namespace) -> dict:
    """The TLS options given, as tls_channel's keyword arguments."""
    return {"ca_file": args.ca_file, "client_cert": args.client_cert, "client_key": args.client_key,
            "server_name": args.tls_server_name}


@contextlib.contextmanager
def open_store(args: argparse.Namespace, *, existing: bool = True) -> Iterator[tuple[Store, str]]:
    """The store named by --out (else the settings) and the configured log directory; closed on exit.
    Only commands that write (`existing=False`) may start a new store: reading a mistyped
    directory would otherwise answer with an empty store."""
    raw, log_dir = load_config()
    if getattr(args, "out", None):
        raw = {**raw, "dir": args.out}
    settings = LogStoreSettings.from_mapping(raw)
    hint = "pass an existing store with --db, or set LOGDB_DIR"
    if existing:
        require_path(settings.base, "log store directory", hint)
    if settings.base.exists() and not settings.base.is_dir():  # reads would find an empty store in it
        raise UsageError(f"{settings.base}: not a log store directory but a file ({hint})")
    store = Store(settings)
    try:
        yield store, log_dir
    finally:
        store.close()


def call(args: argparse.Namespace, method: str, request, *, quiet: bool = False) -> dict:
    """Run one LogService operation, locally or on --remote; returns its JSON form, with
    `warnings` (as REST gives them) when partitions were left out; those are also printed on
    stderr unless `quiet`. See `exit_status`."""
    with _service(args) as invoke:
        reply, warnings = invoke(method, request)
        return _with_warnings(message_to_json(reply), warnings, quiet)


def call_all_pages(args: argparse.Namespace, method: str, request, items: str) -> dict:
    """Run a paged operation (GetDialog) until its last page: the first page's JSON with every
    page's `items`, and an empty next_cursor. One store or channel serves all pages."""
    with _service(args) as invoke:
        reply, warnings = invoke(method, request)
        result = message_to_json(reply)
        while result["next_cursor"]:
            request.cursor = result["next_cursor"]
            reply, more = invoke(method, request)
            page = message_to_json(reply)
            result[items] += page[items]
            result["next_cursor"] = page["next_cursor"]
            warnings += [w for w in more if w not in warnings]
    return _with_warnings(result, warnings, False)


def _with_warnings(result: dict, warnings: list[str], quiet: bool) -> dict:
    if warnings:
        result["warnings"] = warnings
        if not quiet:
            for warning in warnings:  # from --remote, the server's words
                print(f"logdb: {one_line(warning)}", file=sys.stderr)
    return result


def exit_status(result: dict) -> int:
    """1 when the answer left partitions out (they could not be read, or a search found no index), else 0."""
    return EXIT_FAILED if result.get("warnings") else EXIT_OK


@contextlib.contextmanager
def _service(args: argparse.Namespace) -> Iterator[Callable]:
    """invoke(method, request) -> (reply, warnings), on --remote or on the local store (Ingest
    runs locally through ingest_cmd itself). Local warnings name the files by path."""
    if getattr(args, "remote", None):
        with _remote_channel(args) as invoke:
            yield invoke
        return
    with open_store(args) as (store, log_dir):
        api = LogApi(store, Path(log_dir))

        def invoke(name: str, request):
            unreadable = Unreadable()
            reply = getattr(api, _LOCAL[name])(request, unreadable)
            return reply, [*getattr(reply, "warnings", ()), *unreadable.warnings(local=True)]

        yield invoke


_LOCAL = {
    "SearchRequests": "search_requests",
    "GetRequest": "get_request",
    "ListDialogs": "list_dialogs",
    "GetDialog": "get_dialog",
    "BuildIndex": "build_index",
    "Stats": "stats",
}

# What a reply may be: no limit of our own. The server bounds what it sends (the gateway: its
# MAX_BODY_BYTES + 1 MiB, whatever this machine's settings say), and gRPC's default 4 MiB would
# refuse a stored 6 MB request that the gateway accepted and sends.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]


def _remote_target(remote: str) -> tuple[str, bool]:
    """--remote HOST:PORT, or the URL the bundle commands take (grpcs:// speaks TLS): (target, tls)."""
    from aiproxy.logstore.bundles.manifest import UnusableInput
    from aiproxy.logstore.bundles.remote import is_remote, parse_url

    if not is_remote(remote):
        return remote, False
    try:
        return parse_url(remote)
    except UnusableInput:
        raise UsageError(f"{remote!r} is not HOST:PORT, grpc://HOST:PORT or grpcs://HOST:PORT (TLS)") from None


@contextlib.contextmanager
def _remote_channel(args: argparse.Namespace) -> Iterator[Callable]:
    import grpc

    from aiproxy.logstore.bundles.manifest import UnusableInput
    from aiproxy.logstore.bundles.remote import tls_channel
    from aiproxypb.v1 import logs_pb2_grpc

    key = args.api_key or os.environ.get("AIPROXY_API_KEY", "")
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    target, tls = _remote_target(args.remote)
    if tls or args.tls or args.ca_file or args.client_cert or args.tls_server_name:
        try:
            channel = tls_channel(target, _CHANNEL_OPTIONS, **tls_files(args))
        except UnusableInput as exc:
            raise UsageError(str(exc)) from None
    else:
        channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
    with channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)

        def invoke(method: str, request):
            reply = getattr(stub, method)(request, metadata=metadata, timeout=300)
            return reply, list(getattr(reply, "warnings", ()))  # a RequestRecord has none

        yield invoke


# Control characters other than newline and tab (C0, DEL, C1): what clients wrote into the logs must
# not reach the operator's terminal as escape sequences (colours, clearing, titles, a \r faking a line).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ESCAPES = {"\r": "\\r"}
_JSON_UNESCAPED = re.compile(r"[\x7f-\x9f]")  # json.dumps escapes C0 only; these can only be inside strings


def printable(text: str) -> str:
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def one_line(text: str) -> str:
    """printable() with newlines escaped too: for an error line quoting what a server sent."""
    return printable(text).replace("\n", "\\n")


def emit(args: argparse.Namespace, payload, text: Callable[[], str] | None = None) -> None:
    if getattr(args, "json", False) or text is None:
        document = json.dumps(payload, ensure_ascii=False, indent=None if not sys.stdout.isatty() else 2)
        print(_JSON_UNESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", document))
    else:
        print(printable(text()))


def request_line(summary: dict) -> str:
    """One request in listings: search hits, dialog turns. One line, whatever a client named its model
    (or a --remote server sent)."""
    model = summary["model_mapped"] or summary["model_original"]
    return one_line(f"{summary['ts']}  {summary['request_id']}  {model}  {summary['status_code']}")


def dialog_line(summary: dict) -> str:
    models = ",".join(summary["models"])
    return one_line(f"{summary['dialog_id']}  {summary['requests']:>4} turns  {summary['first_ts']} .. {summary['last_ts']}"
                    f"  {models}")


def filter_message(args: argparse.Namespace) -> logs_pb2.LogFilter:
    message = logs_pb2.LogFilter(
        since=str(args.since or ""),
        to=str(args.to or ""),
        model=getattr(args, "model", None) or "",
        provider=getattr(args, "provider", None) or "",
        api_key_hash=getattr(args, "api_key_hash", None) or "",
        dialog_id=getattr(args, "dialog", None) or "",
    )
    if getattr(args, "status", None) is not None:
        message.status_code = args.status
    return message
