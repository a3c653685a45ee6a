"""`logdb bundle create|verify|import|transfer|pull` (docs/bundles.md).

Exit codes: 0 ok; 1 a bad bundle or a failed operation; 2 unusable input (missing file, not a
gzip tar, truncated, a newer schema) or a usage error; 130 interrupted (Ctrl-C), 143 SIGTERM, 129 SIGHUP.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from aiproxy.logstore.atomic_output import OutputExists
from aiproxy.logstore.bundles.create import create_bundle, raw_log_files
from aiproxy.logstore.bundles.importer import import_bundle
from aiproxy.logstore.bundles.manifest import BundleError, UnusableInput
from aiproxy.logstore.bundles.remote import IDLE_TIMEOUT_SECONDS, is_remote, pull, push
from aiproxy.logstore.bundles.transfer import transfer_local
from aiproxy.logstore.bundles.verify import scan_bundle
from aiproxy.logstore.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    day,
    emit,
    json_option,
    one_line,
    open_store,
    tls_files,
    tls_identity_options,
)
from aiproxy.logstore.cli.progress import ProgressBar


def _guarded(func):
    """Bundle errors become one clear line on stderr and an exit code."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BundleError as exc:
            print(f"logdb: {exc}", file=sys.stderr)
            return exc.exit_code
        # Ctrl-C (each command undoes or keeps for resuming what it did on the way out), OSError (a full
        # disk, a directory we may not write) and BrokenPipeError (stdout's reader went away) go on to
        # logdb's main, which reports them as for every command.

    return run


def _store(directory: str | None, *, existing: bool = True):
    return open_store(argparse.Namespace(out=directory), existing=existing)


@_guarded
def run_create(args: argparse.Namespace) -> int:
    # (An inverted range never gets here: logdb's main refuses it first, for every command.)
    with _store(args.db) as (store, log_dir):
        raw_dir = Path(args.raw or log_dir) if args.include_raw or store.settings.bundle_include_raw else None
        if raw_dir is not None and not raw_dir.is_dir():  # a typo must not make a bundle without its raw logs
            raise UsageError(f"{raw_dir}: no such log directory (--raw, else LOG_DIR: where the request logs are)")
        members = [p.path for p in store.existing(args.since, args.to)]
        members += raw_log_files(raw_dir, args.since) if raw_dir is not None else []
        try:
            with ProgressBar(sum(path.stat().st_size for path in members), "bundle create") as bar:
                result = create_bundle(store, args.since, args.to, args.out, raw_dir=raw_dir, progress=bar.advance,
                                       overwrite=args.force)
        except OutputExists as exc:
            raise UsageError(f"{exc.path} exists: pass --force to replace it, or choose another --out") from None
    emit(args, result.as_dict(), result.summary)
    return EXIT_OK


def _archive_bar(path: Path, label: str) -> ProgressBar:
    """A progress bar over the archive's bytes (the one pass that reads it)."""
    return ProgressBar(path.stat().st_size if path.is_file() else 0, label)


def _verify(path: Path, args: argparse.Namespace, *, discard: bool = False) -> int:
    """Check a bundle and print the report; with `discard`, a bundle that fails (or cannot be
    read) is removed, so a file this command fetched never passes for a good one."""
    ok = False
    bar = _archive_bar(path, "bundle verify")
    try:
        report = scan_bundle(path, progress=bar.advance)
        ok = report.ok
    finally:
        bar.close()
        if discard and not ok:
            path.unlink(missing_ok=True)
            print(f"logdb: removed {path}: it failed verification", file=sys.stderr)
    emit(args, report.as_dict(), lambda: "\n".join([*report.problems, "ok" if ok else "fail"]))
    return EXIT_OK if ok else EXIT_FAILED


@_guarded
def run_verify(args: argparse.Namespace) -> int:
    return _verify(Path(args.bundle), args)


@_guarded
def run_import(args: argparse.Namespace) -> int:
    bar = _archive_bar(Path(args.bundle), "bundle import")
    with _store(args.dest, existing=False) as (store, _):  # a restore may start a new store
        try:
            result = import_bundle(Path(args.bundle), store, progress=bar.advance)
        finally:
            bar.close()
    out = result.as_dict()
    emit(args, out, lambda: " ".join(f"{k}={out[k]}" for k in ("rows_imported", "rows_skipped", "partitions",
                                                             "new_partitions", "source_server_id", "bundle_id")))
    return EXIT_OK


@_guarded
def run_transfer(args: argparse.Namespace) -> int:
    source = Path(args.src)
    if not source.is_file():
        raise UnusableInput(f"{source}: no such file")
    remote = is_remote(args.dest)
    with ProgressBar(source.stat().st_size, "bundle transfer") as bar:
        if remote:
            out = push(source, args.dest, api_key=args.api_key, progress=bar.advance, idle_timeout=args.idle_timeout,
                       **tls_files(args))
        else:
            result = transfer_local(source, args.dest, progress=bar.advance)
    if remote:
        emit(args, out, lambda: one_line(" ".join(f"{k}={v}" for k, v in out.items())))  # the server's words
        return EXIT_OK if out["complete"] else EXIT_FAILED
    out = result.as_dict()
    if not result.path.name.endswith((".tgz", ".tar.gz")):
        emit(args, out, lambda: f"bytes={result.bytes} sha256={result.sha256} resumed_from={result.resumed_from} path={result.path}")
        return EXIT_OK
    # A bundle is verified where it landed. One line as the seed printed it (`bytes=… sha256=…
    # verify=ok|fail`, what scripts grep), the problems before it; one JSON document with --json.
    bar = _archive_bar(result.path, "bundle verify")
    try:
        report = scan_bundle(result.path, progress=bar.advance)
    except UnusableInput:  # copied, but not a readable bundle: the line, then the error (exit 2)
        emit(args, {**out, "verify": "fail", "problems": []}, lambda: _transfer_line(result, "fail"))
        raise
    finally:
        bar.close()
    out.update(verify="ok" if report.ok else "fail", problems=report.problems)
    emit(args, out, lambda: "\n".join([*report.problems, _transfer_line(result, out["verify"])]))
    return EXIT_OK if report.ok else EXIT_FAILED


def _transfer_line(result, verdict: str) -> str:
    return (f"bytes={result.bytes} sha256={result.sha256} verify={verdict} resumed_from={result.resumed_from}"
            f" path={result.path}")


@_guarded
def run_pull(args: argparse.Namespace) -> int:
    with ProgressBar(0, "bundle pull") as bar:  # the size comes with the server's first message
        result = pull(args.source, args.since, args.to, args.out, api_key=args.api_key,
                      include_raw=args.include_raw, progress=bar.advance, idle_timeout=args.idle_timeout,
                      **tls_files(args))
    emit(args, result.as_dict(), lambda: f"bytes={result.bytes} sha256={result.sha256} path={result.path}")
    return _verify(result.path, args, discard=not result.already_present)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 86400")
    return value


def _remote_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", help="admin key of the server (default: env AIPROXY_API_KEY)")
    parser.add_argument("--ca-file", help="CA certificate for grpcs:// (default: the system roots)")
    tls_identity_options(parser, "grpcs://")


def register(subparsers) -> None:
    group = subparsers.add_parser(
        "bundle", help="portable log bundles: create, verify, import, transfer, pull",
        description="Portable log bundles (.tgz: db/<partition>, raw/<log>, metadata.json) for backups and moving "
        "logs between servers. Exit codes: 0 ok, 1 bad bundle or failure, 2 unusable input or usage error, "
        "130 interrupted (Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="{create,verify,import,transfer,pull}")

    create = actions.add_parser("create", help="archive the partitions of a date range",
                                description="Archive every partition overlapping --since..--to (consistent snapshots "
                                "of live files), written under a temporary name and renamed when complete; an existing --out file is "
                                "refused unless --force.")
    create.add_argument("--since", type=day, required=True, metavar="YYYY-MM-DD", help="first UTC day")
    create.add_argument("--to", type=day, required=True, metavar="YYYY-MM-DD", help="last UTC day")
    create.add_argument("--out", required=True, metavar="PATH", help="archive file, or a directory to name one in")
    create.add_argument("--force", action="store_true", help="replace --out when it is an existing file")
    create.add_argument("--db", metavar="DIR", help="log store directory (LOGDB_DIR, logs/db)")
    create.add_argument("--include-raw", action="store_true",
                        help="also archive the log files under --raw (request logs, *.log such as app.log) in raw/"
                             " (or LOGDB_BUNDLE_INCLUDE_RAW=true)")
    create.add_argument("--raw", metavar="DIR", help="log directory for --include-raw (LOG_DIR, logs)")
    create.set_defaults(func=run_create)

    verify = actions.add_parser("verify", help="check every member against metadata.json",
                                description="Check sha256 and size of every member, missing and unlisted members, "
                                "unsafe names. Prints the problems, then ok or fail.")
    verify.add_argument("bundle")
    verify.set_defaults(func=run_verify)

    importer = actions.add_parser("import", help="merge a bundle's rows into a store (all or nothing)",
                                  description="Verify, then merge the bundle's rows into the store's partitions "
                                  "(dedup by request id, dialog ids kept, FTS updated). Nothing changes on failure.")
    importer.add_argument("bundle")
    importer.add_argument("--dest", metavar="DIR", help="log store directory (LOGDB_DIR, logs/db)")
    importer.set_defaults(func=run_import)

    transfer = actions.add_parser("transfer", help="copy a bundle to a file, directory or grpc://HOST:PORT",
                                  description="Local DEST: resumable copy through DEST.part, checksum verified, never "
                                  "over a different file. grpc(s)://HOST:PORT: resumable upload to that server's "
                                  "LogService, which verifies and imports it (admin key).")
    transfer.add_argument("src")
    transfer.add_argument("dest")
    _remote_options(transfer)
    transfer.add_argument("--idle-timeout", type=_seconds, default=IDLE_TIMEOUT_SECONDS, metavar="SECONDS",
                          help=f"grpc(s):// DEST: give up when the server takes none of the upload for this long"
                               f" (default {IDLE_TIMEOUT_SECONDS:g})")
    transfer.set_defaults(func=run_transfer)

    pull_parser = actions.add_parser("pull", help="fetch a new bundle from a server",
                                     description="Have a server create a bundle of --since..--to and download it.")
    pull_parser.add_argument("--from", dest="source", required=True, metavar="grpc://HOST:PORT")
    pull_parser.add_argument("--since", type=day, required=True, metavar="YYYY-MM-DD")
    pull_parser.add_argument("--to", type=day, required=True, metavar="YYYY-MM-DD")
    pull_parser.add_argument("--out", required=True, metavar="PATH", help="archive file or directory")
    pull_parser.add_argument("--include-raw", action="store_true", help="also the server's request log files")
    _remote_options(pull_parser)
    pull_parser.add_argument("--idle-timeout", type=_seconds, default=IDLE_TIMEOUT_SECONDS, metavar="SECONDS",
                             help=f"give up when the server sends nothing for this long once it announced the"
                                  f" bundle (default {IDLE_TIMEOUT_SECONDS:g})")
    pull_parser.set_defaults(func=run_pull)

    for parser in (create, verify, importer, transfer, pull_parser):
        json_option(parser)
