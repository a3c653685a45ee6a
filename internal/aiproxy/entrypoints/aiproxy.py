"""`aiproxy serve`: load settings, make sure the gateway is not left open, run the cells."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import gc
import os
import re
import secrets
import signal
import socket
import sys
from importlib import metadata
from pathlib import Path

from dynaconf.vendor.dotenv import dotenv_values

from aiproxy import __version__
from aiproxy.config import ConfigError, Settings, host_port, load_settings
from aiproxy.stopsignals import CELL_SIGNALS, STOP_SIGNALS, settled_exit

DOTENV = Path(".env")
# gRPC's classic I/O (epoll, on the polling thread grpc.aio already runs) instead of its EventEngine,
# which reads and writes the cell's unix-socket hop on a pool of its own threads and hands every
# completion across: 5-9 % less CPU per call (docs/benchmarks.md). gRPC's own variable, so an
# operator's GRPC_EXPERIMENTS wins; it must be in the environment before grpc is imported. Only on
# the grpcio series it was measured on: a later one may have dropped these experiments (gRPC then
# prints a plain-text error line at start) or changed what they cost.
GRPC_IO_DEFAULTS = {
    "GRPC_EXPERIMENTS": "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints",
}
GRPC_IO_MEASURED_ON = ("1.85.",)
# The cyclic GC's young generation: a call allocates thousands of short-lived containers that
# reference counting frees, yet at Python's 700 a collection ran every few calls to scan whatever
# was alive in between. At 50,000, 2-4 % less CPU per call (docs/benchmarks.md).
GC_THRESHOLDS = (50_000, 20, 100)
MAX_OPEN_FILES = 1 << 20  # Linux's default fs.nr_open: the most an unlimited hard limit allows


def grpc_io_defaults() -> dict[str, str]:
    """GRPC_IO_DEFAULTS with the installed grpcio of a series they were measured on, else none."""
    try:
        version = metadata.version("grpcio")
    except metadata.PackageNotFoundError:
        return {}
    return GRPC_IO_DEFAULTS if version.startswith(GRPC_IO_MEASURED_ON) else {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiproxy", description="OpenAI-compatible LLM gateway (REST + gRPC).")
    parser.add_argument("--version", action="version", version=f"aiproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{serve,healthcheck}")
    serve = commands.add_parser("serve", help="run the gateway (the default command)",
                                description="Run the gateway. Flags override settings and environment.")
    serve.add_argument("--host", help="REST listen address (HOST)")
    serve.add_argument("--port", type=int, help="REST port (PORT)")
    serve.add_argument("--grpc-host", help="gRPC listen address (GRPC_HOST)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port, 0 to disable TCP (GRPC_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the ports (WORKERS)")
    serve.add_argument("--config", help="model mapping file (CONFIG_PATH)")
    commands.add_parser("healthcheck", help="exit 0 when this configuration's gateway answers /health",
                        description="GET /health from the REST listener the settings name (environment, "
                                    ".env, settings file, as `serve` reads them, not its --host or --port flags); exit 0 on 200, else 1. "
                                    "The container image's HEALTHCHECK.")
    return parser


def with_default_command(argv: list[str]) -> list[str]:
    """`serve` is the default command, also with its options alone: `aiproxy --workers 2` was
    argparse's "invalid choice: '2' (choose from 'serve')". A first word that is no option is a
    command, mistyped or not: argparse names the commands there are."""
    if argv and (not argv[0].startswith("-") or argv[0] in ("-h", "--help", "--version")):
        return argv
    return ["serve", *argv]


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    pairs = {"HOST": args.host, "PORT": args.port, "GRPC_HOST": args.grpc_host, "GRPC_PORT": args.grpc_port,
             "WORKERS": args.workers, "CONFIG_PATH": args.config}
    return {k: str(v) for k, v in pairs.items() if v is not None}


def ensure_client_key(settings: Settings) -> Settings:
    """No key configured: never run open. Generate one, keep it in .env, and show it once."""
    if settings.api_keys:
        return settings
    kept = _key_in_dotenv()
    if kept:  # API_KEYS set but empty in the environment, which wins over .env: a new key at every start was
        # the result, and the clients' key stopped working at each restart
        print(f"API_KEYS is empty in the environment: using the key kept in {DOTENV.resolve()}.", file=sys.stderr)
        os.environ["API_KEYS"] = kept
        return load_settings()
    key = f"sk-aiproxy-{secrets.token_urlsafe(24)}"
    try:
        lines = _with_client_key(DOTENV.read_text(encoding="utf-8").splitlines() if DOTENV.is_file() else [], key)
        fd = os.open(DOTENV, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing .env too, before the key is written into it
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise ConfigError(f"no API_KEYS configured and {DOTENV.resolve()} is not writable ({exc.strerror}); "
                          "set API_KEYS") from None
    print(
        f"\nNo API_KEYS configured: generated a development key and saved it in {DOTENV.resolve()}:\n\n"
        f"    {key}\n\nUse it as the Bearer token (OpenAI SDK: api_key=...).\n",
        file=sys.stderr,
    )
    os.environ["API_KEYS"] = key
    return load_settings()


def _key_in_dotenv() -> str:
    """The API_KEYS value .env holds (e.g. the development key generated at an earlier start), or ""."""
    if not DOTENV.is_file():
        return ""
    return (dotenv_values(DOTENV).get("API_KEYS") or "").strip()


_KEY_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?API_KEYS\s*=")


def _with_client_key(lines: list[str], key: str) -> list[str]:
    """.env's lines with the key where its first API_KEYS assignment was (under the comment about it
    in configs/.env.example, not appended at the end), and the other assignments (`export API_KEYS=`
    too) dropped: a later one would override it."""
    first = next((i for i, line in enumerate(lines) if _KEY_ASSIGNMENT.match(line)), len(lines))
    rest = [line for line in lines[first:] if not _KEY_ASSIGNMENT.match(line)]
    return [*lines[:first], f"API_KEYS={key}", *rest]


def raise_open_file_limit() -> None:
    """Every client connection, upstream connection and open log file holds a descriptor, and the
    soft limit most services start with (1024: systemd's default, and recent Docker's) ran out at
    about a thousand connections: clients were then dropped unanswered, REST and gRPC alike. The soft
    limit goes up to the hard one, as Go's runtime does for every server; workers inherit it."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else MAX_OPEN_FILES
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    with contextlib.suppress(ValueError, OSError):  # a hard limit the kernel caps lower: keep the soft one
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def config_error(message: object) -> int:
    """The one line a configuration problem gets on stderr, wherever start-up found it; exit code 2."""
    print(f"aiproxy: configuration error: {message}", file=sys.stderr, flush=True)
    return 2


def _run_cell(settings: Settings, parent_pid: int | None = None) -> int:
    """Run one cell until it is stopped; its exit code. A configuration problem found on the way
    (in the log directory, a port taken since main() probed it, a TLS file) is one line and 2."""
    from loguru import logger

    from aiproxy.cell import serve_cell
    from aiproxy.eventloop import loop_factory
    from aiproxy.logsetup import configure_logging

    gc.set_threshold(*GC_THRESHOLDS)
    try:
        configure_logging(settings)  # a LOG_DIR that cannot be written is a ConfigError
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(serve_cell(settings, parent_pid=parent_pid))
    except ConfigError as exc:
        return config_error(exc)
    except Exception as exc:
        # the ports were free a moment ago (_ensure_free); something took one since
        if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            return config_error(f"cannot listen for HTTP on {host_port(settings.host, settings.port)} ({exc.strerror}):"
                                " stop the other server, or set PORT (and HOST)")
        # A defect: logged as every stderr line is, a JSON line (with the traceback) that app.log keeps
        # too, not Python's plain-text traceback on stderr alone.
        logger.opt(exception=exc).critical("the cell stopped on an unexpected error")
        return 1
    finally:
        _ignore_stop_signals()
    return 0


def _ignore_stop_signals() -> None:
    """The cell has stopped serving and the process only exits now (flushing the request log). Its
    loop's signal handlers are gone, and the default ones would kill it: the parent's drain signal
    to a cell that the operator's signal (systemd signals the whole service) reached first, or a
    second Ctrl-C, turned a clean stop into exit code 138 or 130."""
    for sig in CELL_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def cell_process(settings: Settings, parent_pid: int) -> None:
    """A worker cell's process (multiprocessing target): it stops when the parent goes away."""
    from aiproxy.entrypoints.workers import die_with_parent

    die_with_parent(parent_pid)
    sys.exit(settled_exit(_run_cell(settings, parent_pid)))  # a multiprocessing target's return value is not its exit code


def _ensure_free(host: str, port: int, prefix: str = "") -> None:
    """The cells listen with SO_REUSEPORT (workers share the ports), which would let this gateway
    quietly share a port with another server that uses it too (a running aiproxy, any gRPC
    server): a plain bind first proves that nobody listens there. `prefix`: "GRPC_" for gRPC's."""
    if not port:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is fine
            probe.bind((host, port))
    except OSError as exc:
        port_setting = f"{prefix}PORT" + (" (0 turns the gRPC listener off)" if prefix else "")
        if exc.errno == errno.EADDRINUSE:
            advice = f"stop the server using it, or set {port_setting}"
        elif exc.errno == errno.EACCES:
            advice = f"a port below 1024 needs privileges; set {port_setting}"
        else:  # not an address of this machine (was: "stop the server using it", naming no host setting)
            advice = f"set {prefix}HOST to an address of this machine"
        raise ConfigError(f"cannot listen on {host_port(host, port)} ({exc.strerror or exc}): {advice}") from None


WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::"})


def _ensure_apart(settings: Settings) -> None:
    """REST and gRPC on one port of overlapping addresses both listen (SO_REUSEPORT lets the second
    bind succeed), and the kernel hands every connection to one of them: gRPC clients got "Failed
    parsing HTTP/2" from the REST listener, with nothing in the log. Called after _ensure_free, so
    both hosts resolve."""
    if not settings.grpc_port or settings.grpc_port != settings.port:
        return

    def addresses(host: str) -> set[str]:
        return {info[4][0] for info in socket.getaddrinfo(host, settings.port, proto=socket.IPPROTO_TCP)}

    rest, grpc_ = addresses(settings.host), addresses(settings.grpc_host)
    if rest & grpc_ or (rest | grpc_) & WILDCARD_ADDRESSES:
        raise ConfigError(f"PORT and GRPC_PORT are both {settings.port}: give the gRPC listener a port of its own"
                          " (GRPC_PORT; 0 turns it off)")


# The address that reaches a listener on each wildcard address (asyncio binds "::" IPv6-only).
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def healthcheck() -> int:
    """`aiproxy healthcheck`: GET /health from the REST listener of this configuration, found as
    `serve` finds it (the image's HEALTHCHECK read PORT and TLS_CERT_FILE from the environment only,
    so a port or TLS set in the settings file or .env made a healthy container unhealthy). 0 on 200,
    else 1 with one line on stderr (Docker reserves 2). Over HTTPS the certificate is not checked:
    the question is whether this gateway answers, not whether its certificate fits 127.0.0.1."""
    import ssl
    import urllib.request

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"aiproxy healthcheck: {exc}", file=sys.stderr)
        return 1
    host = _LOOPBACK.get(settings.host, settings.host)
    scheme = "https" if settings.tls.enabled else "http"
    url = f"{scheme}://{host_port(host, settings.port)}/health"
    context = ssl._create_unverified_context() if settings.tls.enabled else None
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as answer:
            return 0 if answer.status == 200 else 1
    except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
        reason = getattr(exc, "reason", None) or exc  # URLError wraps the socket's error
        reason = getattr(reason, "strerror", None) or reason
        # The only listener it can know is the settings' one: `serve --port N` is a flag of that process.
        print(f"aiproxy healthcheck: {url}: {reason} (the REST listener of HOST, PORT and TLS_CERT_FILE"
              " in the environment, .env or the settings file; a port given only as `serve --port` is"
              " not one it can see: set PORT)", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(with_default_command(sys.argv[1:] if argv is None else argv))
    if args.command == "healthcheck":
        return healthcheck()
    if args.command == "serve":
        # A stop signal during start-up waits for the handlers (the cell's, or the workers' parent's,
        # which unblock it) instead of killing the process: the stop is graceful from the start.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        raise_open_file_limit()
    os.environ.update(_overrides(args) if args.command == "serve" else {})
    for name, value in grpc_io_defaults().items():  # before the imports below bring in grpc; workers inherit it
        os.environ.setdefault(name, value)
    try:
        settings = ensure_client_key(load_settings())
        from aiproxy.cell import build_gateway, http_ssl_context
        from aiproxy.logstore.live import check_live_store
        from aiproxy.logstore.settings import LogStoreSettings

        http_ssl_context(settings)  # validate certificates, mappings and providers before any worker starts
        build_gateway(settings)
        check_live_store(LogStoreSettings.from_mapping(settings.logdb))
        _ensure_free(settings.host, settings.port)
        _ensure_free(settings.grpc_host, settings.grpc_port, "GRPC_")
        _ensure_apart(settings)
        if settings.workers > 1:  # the parent's own JSON app log (no request log: it serves nothing)
            from aiproxy.logsetup import configure_logging

            configure_logging(dataclasses.replace(settings, request_log_enabled=False))
    except (ConfigError, RuntimeError) as exc:
        return config_error(exc)
    if os.environ.get("GEMINI_AS_IS", "").strip().lower() == "true":
        print("aiproxy: GEMINI_AS_IS is ignored: Gemini answers are always translated to the OpenAI format "
              "(see docs/gemini.md)", file=sys.stderr)
    if settings.workers > 1:
        from aiproxy.entrypoints.workers import Supervisor

        return settled_exit(Supervisor(settings, cell_process).run())
    return settled_exit(_run_cell(settings))


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":  # `python -m aiproxy.entrypoints.aiproxy …` (else it would do nothing and exit 0)
    console()
