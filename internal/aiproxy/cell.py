"""One cell: the grpc.aio servers and the aiohttp facade on one event loop, the facade reaching
the services through a unix-socket gRPC channel. `--workers N` runs N cells on shared ports.

Shutdown (SIGTERM, SIGINT or SIGHUP): every listener stops accepting at once, then the requests,
streams and RPCs in flight share one deadline, SHUTDOWN_GRACE_SECONDS away; what remains then is
ended (a stream gets its error frame) and the process exits 0. A second signal ends it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import ssl
import struct
import tempfile
import time

from aiohttp import web
from loguru import logger

from aiproxy.auth import KeyRing
from aiproxy.chat.gateway import ChatGateway
from aiproxy.chat.record import RequestLog
from aiproxy.config import ConfigError, Settings, host_port
from aiproxy.errors import AuthenticationFailed, GatewayError
from aiproxy.httpapi.app import create_app
from aiproxy.httpapi.chat_routes import ARRIVED, ENDING
from aiproxy.httpapi.errors import error_response
from aiproxy.httpapi.metadata import REQUEST_ID_KEY
from aiproxy.httpapi.protocol import AppRunner
from aiproxy.identity import KeyHasher
from aiproxy.logsetup import prune_interval, prune_logs
from aiproxy.logstore.live import run_live_ingest
from aiproxy.logstore.server_identity import resolve_server_id
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.routing import ModelRouter
from aiproxy.rpc.chat_service import ChatServicer
from aiproxy.rpc.server import FINISH_SECONDS, GrpcServer, read_tls_file
from aiproxy.stopsignals import CELL_SIGNALS, DRAIN_SIGNAL, STOP_NOW_SIGNAL, StopSignals, handled_stop_signals


def _no_passphrase() -> bytes:
    """Called for an encrypted key, which OpenSSL would otherwise ask a passphrase for on the terminal."""
    raise ConfigError("TLS_KEY_FILE is encrypted with a passphrase, which the gateway cannot ask for: store the key"
                      " unencrypted (openssl pkey -in KEY -out NEW_KEY), readable only by the gateway's user")


def http_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.tls
    if not tls.enabled:
        return None
    # Missing or unreadable: ssl's own OSError names neither file nor setting.
    read_tls_file(tls.cert_file, "TLS_CERT_FILE")
    key = read_tls_file(tls.key_file, "TLS_KEY_FILE")
    # Which file holds no certificate or key: load_cert_chain says only "PEM lib" for either. The stdlib
    # reads a certificate (and its dates, for the expiry check below) only through this private helper:
    # without it (another Python) those two checks are skipped.
    decode = getattr(ssl._ssl, "_test_decode_cert", None)
    try:
        not_after = decode(tls.cert_file)["notAfter"] if decode else None
    except ssl.SSLError:
        raise ConfigError(f"TLS_CERT_FILE={tls.cert_file}: no PEM certificate in it") from None
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError(f"TLS_KEY_FILE={tls.key_file}: no PEM private key in it")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TLS_CERT_FILE and TLS_KEY_FILE do not form a valid pair ({exc.reason or exc}); check both files"
        ) from None
    # An expired certificate, which every client would refuse.
    if not_after and ssl.cert_time_to_seconds(not_after) < time.time():
        raise ConfigError(f"TLS_CERT_FILE={tls.cert_file}: the certificate expired on {not_after}; renew it")
    if tls.client_ca_file:  # gRPC's mutual TLS; grpc itself reports a bad bundle as a failed bind
        read_tls_file(tls.client_ca_file, "TLS_CLIENT_CA_FILE")
        try:
            ssl.create_default_context(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"TLS_CLIENT_CA_FILE={tls.client_ca_file}: not a PEM bundle of CA certificates"
                              f" ({exc.reason or exc})") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def build_gateway(settings: Settings) -> ChatGateway:
    router = ModelRouter.from_file(settings.config_path, set(settings.providers))
    return ChatGateway(
        router,
        settings.providers,
        RequestLog(settings.request_log_enabled),
        KeyHasher(_key_hash_secret(settings), settings.log_dir),
        # The same identity the log store stamps on its rows.
        resolve_server_id(LogStoreSettings.from_mapping(settings.logdb)),
        max_answer_size=settings.grpc_message_bytes,
    )


def _key_hash_secret(settings: Settings) -> str:
    """Only request log records carry key hashes: without them, a secret of this process's own, so
    that LOG_DIR need not be writable (for its .key_hash_secret) when no log file is written there."""
    return settings.key_hash_secret or ("" if settings.request_log_enabled else secrets.token_hex(32))


def body_rejector(settings: Settings, gateway: ChatGateway):
    """For bodies that cannot become an RPC: answer 401 first if the key is bad (as OpenAI does),
    else the body error; either way the refusal reaches the request log."""
    keys = KeyRing(settings.api_keys, settings.admin_api_keys)

    def reject(request: web.Request, exc: GatewayError) -> web.Response:
        caller = None
        try:
            caller = keys.authenticate(request.headers.get("Authorization"))
        except AuthenticationFailed as auth_error:
            exc = auth_error
        exchange = gateway.begin(caller, request[REQUEST_ID_KEY], "http", stream=False)
        exchange.began_at(request[ARRIVED])  # a body that took its time (408) is part of the exchange
        gateway.finish(exchange, exc)
        return error_response(exc)

    return reject


# During a drain, a connection waiting for its next request is closed after this long: a request
# already on its way on it (sent just before the signal, or by a client that has not yet seen the
# listener close) is still answered, with `Connection: close`.
IDLE_LINGER_SECONDS = 1.0
# How long the drain start waits for the loop to accept the connections the kernel already completed
# (closing the listening socket resets them).
BACKLOG_SECONDS = 0.5
POLL_SECONDS = 0.05


class Shutdown:
    """When to stop and how fast: `requested` starts the drain, `hurry` ends it at once."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurry = asyncio.Event()
        self.reason = ""
        self._signals = StopSignals()

    def install(self, loop: asyncio.AbstractEventLoop, *, worker: bool) -> None:
        for sig in handled_stop_signals():
            loop.add_signal_handler(sig, self._on_signal, sig)
        if worker:
            loop.add_signal_handler(DRAIN_SIGNAL, self.request, "asked by the parent process")
            loop.add_signal_handler(STOP_NOW_SIGNAL, self.now, "asked by the parent process")
        # A worker cell starts with these blocked (the parent's doing), so that a signal sent before the
        # handlers existed waits for them instead of killing the cell.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CELL_SIGNALS)

    def _on_signal(self, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        second = self._signals.second(sig)
        if second is None:
            logger.debug("the stop signal again at once: a copy of the first, not a second signal", signal=name)
        elif second:
            self.now(f"second signal ({name})")
        else:
            self.request(name)

    def request(self, reason: str) -> None:
        if not self.requested.is_set():
            self.reason = reason
            self.requested.set()

    def now(self, reason: str) -> None:
        if self.requested.is_set() and not self.hurry.is_set():
            logger.warning("stopping at once", reason=reason)
        self.request(reason)
        self.hurry.set()


def _parked(conn) -> bool:
    """The connection waits for its next request: aiohttp's RequestHandler awaits `_waiter` only
    between requests. No public state says so; were it renamed, idle connections would wait for the
    deadline instead (test_shutdown's test with an idle keep-alive connection would notice)."""
    waiter = getattr(conn, "_waiter", None)
    return waiter is not None and not waiter.done()


def _accept_queue(sock) -> int:
    """Connections waiting in a listening socket's accept queue; 0 if unknown. On Linux, TCP_INFO's
    tcpi_unacked holds that count for a listening socket (as `ss -l` shows it in Recv-Q)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("8B6I", info)[12]
    except (OSError, AttributeError, struct.error):
        return 0


class _TLSSite(web.TCPSite):
    """aiohttp's TCPSite with the TLS handshake bounded like a request head: asyncio's own bound is
    60 s whatever REQUEST_BODY_TIMEOUT_SECONDS says, and TCPSite cannot pass another."""

    def __init__(self, *args, handshake_timeout: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would create the server without the bound
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_port=self._reuse_port, ssl_handshake_timeout=self._handshake_timeout,
        )


class RestServer:
    """The aiohttp side of a cell: its listener, and its part of the shutdown.

    Idle connections: aiohttp's keep-alive timer is also the only bound on a request head that
    never completes (it runs from the connection's start or its last response, and data does not
    reset it), so it is REQUEST_BODY_TIMEOUT_SECONDS: a slow head, a slow body and an idle
    keep-alive connection all end after that long."""

    def __init__(self, app: web.Application, settings: Settings, ssl_context: ssl.SSLContext | None) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._draining_since: float | None = None
        app.on_response_prepare.append(self._close_when_draining)
        # shutdown_timeout only bounds the very end (close()): the drain itself is serve_cell's.
        self._runner = AppRunner(app, handler_cancellation=True, access_log=None,
                                 keepalive_timeout=settings.request_body_timeout_seconds,
                                 shutdown_timeout=FINISH_SECONDS)
        self._site: web.TCPSite | None = None

    async def _close_when_draining(self, request: web.Request, response: web.StreamResponse) -> None:
        if self._draining_since is not None:  # the client takes its next request elsewhere
            response.force_close()  # aiohttp closes the connection after this response
            response.headers["Connection"] = "close"  # aiohttp set its headers before this hook runs

    async def start(self) -> None:
        await self._runner.setup()
        settings = self._settings
        if self._ssl_context is None:
            self._site = web.TCPSite(self._runner, settings.host, settings.port, reuse_port=True)
        else:
            self._site = _TLSSite(self._runner, settings.host, settings.port, ssl_context=self._ssl_context,
                                  reuse_port=True, handshake_timeout=settings.request_body_timeout_seconds)
        try:
            await self._site.start()
        except OSError:  # the port is taken: close what is open, so the process can say so and exit
            await self._runner.cleanup()
            raise

    @property
    def port(self) -> int:
        """The port listened on: the one PORT=0 had the system choose, once started."""
        return self._site.port if self._site is not None else self._settings.port

    async def stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        self._draining_since = loop.time()
        # TCPSite keeps its asyncio server private; without it, only the first loop iteration accepts.
        listening = getattr(getattr(self._site, "_server", None), "sockets", None) or ()
        deadline = loop.time() + BACKLOG_SECONDS
        await asyncio.sleep(0)
        while loop.time() < deadline:
            if not any(_accept_queue(sock) for sock in listening):
                break
            await asyncio.sleep(0.005)
        if self._site is not None:
            await self._site.stop()

    def close_idle(self, now: float) -> None:
        if self._draining_since is None or now - self._draining_since < IDLE_LINGER_SECONDS:
            return
        for conn in self._runner.server.connections:
            if _parked(conn):
                conn.force_close()

    def connections(self) -> int:
        """Connections the drain waits for. With TLS, one the gateway closed (idle at the stop, or by
        the keep-alive timeout before it) stays listed until the client answers its close_notify, up
        to 30 s, which an idle pooled connection never does: its last response was handed over, it
        is no work. (aiohttp drops `transport` when it closes an idle connection, not after a
        `Connection: close` response, whose end may still be on its way.)"""
        connections = self._runner.server.connections
        if self._ssl_context is None:
            return len(connections)
        return sum(1 for conn in connections if conn.transport is not None)

    def end_requests(self) -> None:
        """The deadline: a request whose body is still arriving is answered 503 (the RPCs end with end_calls)."""
        self._runner.app[ENDING].set()

    async def close(self) -> None:
        """Handlers still running get FINISH_SECONDS, then are cancelled; every connection closes."""
        await self._runner.cleanup()


def internal_socket_path(pid: int) -> str:
    """The unix socket between a cell's facade and its ChatService (the workers' parent removes a
    dead cell's: only a cell that stops normally removes its own)."""
    return os.path.join(tempfile.gettempdir(), f"aiproxy-{pid}.sock")


async def serve_cell(settings: Settings, shutdown: Shutdown | None = None, *, parent_pid: int | None = None) -> None:
    """Serve until a signal (or `shutdown`) says stop, then drain. `parent_pid`: this is a worker
    cell of that process, and stops when it is gone."""
    shutdown = shutdown or Shutdown()
    loop = asyncio.get_running_loop()
    shutdown.install(loop, worker=parent_pid is not None)
    ssl_context = http_ssl_context(settings)
    gateway = build_gateway(settings)
    socket_path = internal_socket_path(os.getpid())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    chat = ChatServicer(
        gateway, settings.max_body_bytes, settings.grpc_message_bytes, settings.request_body_timeout_seconds
    )
    grpc_server = GrpcServer(settings, chat, socket_path)
    await grpc_server.start()
    channel = grpc_server.internal_channel()
    rest = RestServer(create_app(settings, channel, body_rejector(settings, gateway)), settings, ssl_context)
    try:
        await rest.start()
    except OSError:
        await grpc_server.stop()
        await channel.close()
        raise
    background = _start_background(settings, shutdown, parent_pid)
    scheme = "https" if ssl_context else "http"
    logger.info(
        "aiproxy listening",
        rest=f"{scheme}://{host_port(settings.host, rest.port)}",
        grpc=host_port(settings.grpc_host, grpc_server.tcp_port) if grpc_server.tcp_port else None,
        tls=bool(ssl_context),
        server_id=gateway.server_id,
    )
    await shutdown.requested.wait()
    grace = settings.shutdown_grace_seconds
    started = loop.time()
    logger.info("shutting down", reason=shutdown.reason, grace_seconds=grace)
    await asyncio.gather(grpc_server.stop_accepting(grace), rest.stop_accepting())
    drained = await _drain(rest, grpc_server, started + grace, shutdown.hurry)
    if not drained:
        logger.warning("ending what is still in flight", rest_connections=rest.connections(),
                       grpc_calls=grpc_server.busy(), after_seconds=round(loop.time() - started, 3))
    grpc_server.end_calls()  # UNAVAILABLE with an OpenAI error: the facade writes it as a 503 or an error frame
    rest.end_requests()
    await rest.close()
    await grpc_server.stop()
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await channel.close()
    await gateway.aclose()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    logger.info("stopped", after_seconds=round(loop.time() - started, 3))


async def _drain(rest: RestServer, grpc_server: GrpcServer, deadline: float, hurry: asyncio.Event) -> bool:
    """Wait until nothing is in flight (True) or the deadline or a second signal (False)."""
    loop = asyncio.get_running_loop()
    while not hurry.is_set():
        now = loop.time()
        rest.close_idle(now)
        if not rest.connections() and not grpc_server.busy():
            return True
        if now >= deadline:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(POLL_SECONDS, deadline - now)):
                await hurry.wait()
    return False


async def _watch_parent(parent_pid: int, shutdown: Shutdown) -> None:
    """A worker cell must not outlive its parent (it would keep the ports). On Linux the kernel sends
    SIGTERM when the parent dies (PR_SET_PDEATHSIG, set at the cell's start); this covers the rest."""
    while True:
        await asyncio.sleep(1)
        if os.getppid() != parent_pid:
            break
    shutdown.request("the parent process is gone")


def _start_background(settings: Settings, shutdown: Shutdown, parent_pid: int | None) -> list[asyncio.Task]:
    # Live ingestion returns at once unless LOGDB_ENABLED.
    tasks = [asyncio.create_task(run_live_ingest(settings, shutdown.requested), name="live-ingest")]
    tasks.append(asyncio.create_task(_prune_logs_periodically(settings), name="prune-logs"))
    if parent_pid is not None:
        tasks.append(asyncio.create_task(_watch_parent(parent_pid, shutdown), name="watch-parent"))
    return tasks


async def _prune_logs_periodically(settings: Settings) -> None:
    interval = prune_interval(settings.request_log_retention)
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(prune_logs, settings)
        except OSError as exc:  # the log directory unreadable for a while: tried again next time
            logger.warning("log retention failed", error=str(exc))
