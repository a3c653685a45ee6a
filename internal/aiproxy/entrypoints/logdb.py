"""`logdb`: the log store CLI. Explicit commands always run; the LOGDB_* switches only decide
what the gateway does on its own. Exit codes: 0 ok, 1 failure or not found (also: a partition
file that cannot be read was left out, or an answer needed one: one line naming it), 2 usage error or
invalid query, 141 (128 + SIGPIPE, as for `cat`) when the reader of stdout went away (`| head`), 130 on
Ctrl-C, 143 on SIGTERM and 129 on SIGHUP (128 + the signal; all three end it alike, one line on stderr)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

import grpc

from aiproxy.logstore.cli.common import EXIT_FAILED, EXIT_USAGE, UsageError, one_line
from aiproxy.logstore.cli.stop_signals import Stopped, stop_signals_raise
from aiproxy.logstore.damage import ControlUnreadable, PartitionUnreadable, StoreBusy, is_file_error
from aiproxy.logstore.errors import InvalidQuery, LogNotFound
from aiproxy.logstore.partitions import check_day_order
from aiproxy.logstore.settings import LogStoreConfigError
from aiproxy.logstore.stoppable import raise_stop
from aiproxy.stopsignals import settled_exit

# Each module offers register(subparsers).
COMMAND_MODULES = (
    "aiproxy.logstore.cli.admin_cmd",
    "aiproxy.logstore.cli.ingest_cmd",
    "aiproxy.logstore.cli.index_cmd",
    "aiproxy.logstore.cli.dialogs_cmd",
    "aiproxy.logstore.cli.query_cmd",
    "aiproxy.logstore.cli.bundle_cmd",
)


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class _Parser(argparse.ArgumentParser):
    """Unknown options are reported with the usage of the command they were given to; argparse
    otherwise passes them up and shows the top-level usage. Subcommand parsers inherit the class."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="logdb", description="aiproxy log store: ingest, search, dialogs, maintenance.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


_GRPC_EXIT = {grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE}
# What to do, where the server's message cannot know how the key was (not) given.
_GRPC_HINT = {grpc.StatusCode.UNAUTHENTICATED: " (pass an admin key with --api-key, or set AIPROXY_API_KEY)",
              grpc.StatusCode.PERMISSION_DENIED: " (pass one of the server's ADMIN_API_KEYS with --api-key, or set"
                                                 " AIPROXY_API_KEY)"}
# gRPC's words when no connection was made; plain gRPC against a TLS listener only says 'Socket closed'.
_CONNECT_FAILED = "failed to connect"
_CONNECT_HINT = (" (check the address, that TLS matches the listener: grpcs://, --tls or --ca-file for a TLS one,"
                 " and --client-cert/--client-key for one that requires a client certificate)")


def _grpc_hint(exc: grpc.RpcError) -> str:
    if exc.code() == grpc.StatusCode.UNAVAILABLE and _CONNECT_FAILED in (exc.details() or ""):
        return _CONNECT_HINT
    return _GRPC_HINT.get(exc.code(), "")


def _check_range(args: argparse.Namespace) -> None:
    try:
        check_day_order(getattr(args, "since", None), getattr(args, "to", None), ("--since", "--to"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# Flags naming local paths -> what a server uses instead: with --remote they would be dropped silently.
_LOCAL_ONLY = (("source", "--from", "the server ingests its own LOG_DIR"), ("out", "--out/--db", "the server uses its own store"))


def _check_remote(args: argparse.Namespace) -> None:
    if not getattr(args, "remote", None):
        return
    for dest, flag, instead in _LOCAL_ONLY:
        if getattr(args, dest, None):
            raise UsageError(f"{flag} names a local path, which --remote does not use: {instead}; drop {flag},"
                             " or leave out --remote to work on local files")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with stop_signals_raise():  # also while the line below is printed: a relayed copy of the signal waits
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        _check_range(args)
        _check_remote(args)
        try:
            code = args.func(args)
        except Exception as exc:
            raise_stop(exc)  # a statement a stop signal aborted: the stop, not an SQLite error
            raise
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at interpreter exit
        return code
    except KeyboardInterrupt as exc:  # what a command committed stays (ingest checkpoints, imported partitions)
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        why = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        with contextlib.suppress(OSError):  # a SIGHUP's terminal may be gone: the exit code still tells
            print(f"logdb: {why}; run the same command again to finish", file=sys.stderr)
        return settled_exit(128 + signum)
    except BrokenPipeError:
        # The reader has what it wanted (`logdb search … | head`): end quietly, as the Python docs
        # advise, with stdout on devnull so the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (InvalidQuery, LogStoreConfigError, UsageError) as exc:
        print(f"logdb: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return EXIT_USAGE
    except LogNotFound as exc:
        print(f"logdb: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except (PartitionUnreadable, ControlUnreadable) as exc:  # an answer (or ingest) needs a file SQLite cannot read
        print(f"logdb: {exc.message} (file: {exc.path})", file=sys.stderr)
        return EXIT_FAILED
    except StoreBusy as exc:
        print(f"logdb: {exc.path} {exc.CAUSE}; {exc.ADVICE}", file=sys.stderr)
        return EXIT_FAILED
    except grpc.RpcError as exc:
        # The details are the server's words: no escape sequence or line of its own reaches the terminal.
        print(f"logdb: {exc.code().name}: {one_line(exc.details() or '')}{_grpc_hint(exc)}", file=sys.stderr)
        return _GRPC_EXIT.get(exc.code(), EXIT_FAILED)
    except OSError as exc:  # a directory of the store that cannot be created or written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"logdb: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if not is_file_error(exc):
            raise
        # Another store file (control.sqlite3) that cannot be read or changed: one line, not a traceback.
        print(f"logdb: the log store cannot use one of its files: {exc}", file=sys.stderr)
        return EXIT_FAILED


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":  # `python -m aiproxy.entrypoints.logdb …` (else it would do nothing and exit 0)
    console()
