"""The grpc.aio servers: ChatService, LogService, standard health checking and reflection.

A cell runs two of them over the same servicers: the public one on GRPC_HOST:GRPC_PORT and an
internal one on a unix socket for the in-process REST facade. grpc.aio stops all of a server's
ports at once, and a shutdown must stop the public port at once while the REST requests still
draining keep reaching the services through the unix socket: hence two servers. The internal one
also serves CellHop, which carries the facade's chat calls (rpc.cell_hop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
from collections import namedtuple
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aiproxy.auth import KeyRing
from aiproxy.config import ConfigError, Settings, host_port
from aiproxy.errors import ClientStalled, RequestTimeout, ServerShuttingDown
from aiproxy.identity import request_id
from aiproxy.rpc.cell_hop import CARRIED_METHODS, CellHopServicer
from aiproxy.rpc.chat_service import ChatServicer
from aiproxy.rpc.interceptor import AuthInterceptor, WrappingInterceptor, metadata_value
from aiproxy.rpc.log_service import add_log_service
from aiproxy.rpc.status import REQUEST_ID, abort_with
from aiproxy.rpc.steps import end_stream, received, sent
from aiproxypb.v1 import chat_pb2_grpc, hop_pb2_grpc

SERVICE_NAMES = ("aiproxy.v1.ChatService", "aiproxy.v1.LogService")
# Calls that are no work to wait for: a health Watch stream lasts as long as its client wants.
_NOT_WORK = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# A call that carries others, each tracked as its own (rpc.cell_hop): it stays open through the
# drain, for the carried calls' results, and ends when the facade closes it.
_CARRIER = "/aiproxy.v1.CellHop/"
# Calls one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). gRPC's
# default is no limit, and a call whose request message never completes is held before its key is
# checked: one connection opening 60,000 of them held 380 MiB for as long as it stayed. A channel
# queues calls beyond the limit, except in the first moment of a connection (before it has the
# server's settings), when grpcio sends them and gets them refused: so far above real bursts.
MAX_CALLS_PER_CONNECTION = 1000
# What a call's request metadata may hold in all, as HPACK counts it (a name and value + 32 bytes each).
# gRPC's default is 8 KiB soft, 16 KiB hard, and between the two it refuses calls at random, the more
# often the larger they are: the same call, metadata 9 KiB, failed one time in five, 15 KiB four in
# five. One limit, its hard one, refuses every call above it and none below.
MAX_METADATA_BYTES = 16 * 1024
# sun_path's size on Linux, less its terminating NUL.
UNIX_PATH_MAX = 107
# How often a client may ping while nothing else moves on its connection. Clients behind NATs and load
# balancers turn keepalive on (Go's and Java's clients ping every 10 s at most), and a call waiting for
# a slow model is quiet for minutes: gRPC's default, one ping in 5 minutes, answered the third early
# ping with GOAWAY too_many_pings, which ended such calls with UNAVAILABLE.
MIN_CLIENT_PING_INTERVAL_MS = 1000
# After the calls were told to end: how long they get to send their status before grpc.aio cancels them.
FINISH_SECONDS = 0.5
# The cell's own hop, facade -> servicers over the unix socket. Both ends are this process, which
# already bounds what crosses it (the facade: MAX_BODY_BYTES in; the gateway: an answer within
# grpc_message_bytes), so the hop runs gRPC's minimal filter stack, without the message-size,
# idle and service-config filters, and its channel never retries: each saves CPU on every call
# (in a paired micro-benchmark of the hop, 0.90x and 0.94x of its CPU per unary call).
_MINIMAL_STACK = ("grpc.minimal_stack", 1)


def read_tls_file(path: str, setting: str) -> bytes:
    if "-----BEGIN" in path:  # the file's contents pasted into the setting: echoing it would print a private key
        raise ConfigError(f"{setting} holds PEM text, not a file path: save it to a file readable only by the"
                          f" gateway's user and set {setting} to that file's path")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}={path}: cannot read it ({exc.strerror})") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    tls = settings.tls
    key, cert = read_tls_file(tls.key_file, "TLS_KEY_FILE"), read_tls_file(tls.cert_file, "TLS_CERT_FILE")
    if tls.client_ca_file:
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=read_tls_file(tls.client_ca_file, "TLS_CLIENT_CA_FILE"),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([(key, cert)])


class CallTracker:
    """Knows every RPC in flight (its task), so that a shutdown can wait for them and, once the grace
    period is over, end each with UNAVAILABLE and an OpenAI error saying why (the facade relays it as
    a 503, or as the error frame of a stream) instead of grpc.aio's bare cancellation. Once the calls
    were ended, a new one is refused the same way.

    Every handler becomes a coroutine (streams write with context.write), so that the cancellation
    always lands inside the wrapper, never in grpc.aio's own loop over a response generator, and a
    generator's writes are bounded by `send_timeout` (REQUEST_BODY_TIMEOUT_SECONDS) as ChatService's are,
    a client stream's reads (ImportBundle's) as long. One tracker serves both servers (`interceptor()`)."""

    def __init__(self, send_timeout: float) -> None:
        self._send_timeout = send_timeout
        self._calls: dict[asyncio.Task, bool] = {}  # task -> whether it is work to wait for
        self._ending = False

    def interceptor(self) -> WrappingInterceptor:
        """A server's interceptor tracking its calls."""
        return WrappingInterceptor(self._wrap_method)

    def busy(self) -> int:
        """The calls in flight that a drain waits for."""
        return sum(self._calls.values())

    def end_all(self) -> None:
        self._ending = True
        for task in list(self._calls):
            task.cancel(ServerShuttingDown.CANCEL_MESSAGE)

    def _wrap_method(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(_CARRIER):
            return handler
        return self._wrap(handler, not method.startswith(_NOT_WORK))

    def _wrap(self, handler, work: bool):
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, None),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, _writing),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, _reading),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, _writing),  # none yet: its reads unbounded
        )
        for attribute, build, bounded in kinds:
            inner = getattr(handler, attribute)
            if inner:
                run = bounded(inner, self._send_timeout) if bounded else inner
                return build(self._tracked(run, work), handler.request_deserializer, handler.response_serializer)
        return handler

    def _tracked(self, run, work: bool):
        calls = self._calls

        async def behavior(request, context):
            if self._ending:
                await _refuse(context)
            task = asyncio.current_task()
            calls[task] = work
            try:
                return await run(request, context)
            except asyncio.CancelledError:
                if not self._ending or context.done():  # the client cancelled: nothing to tell it
                    raise
                task.uncancel()
                await _refuse(context)  # ends cancelled when the status cannot be sent (abort_with)
            finally:
                calls.pop(task, None)

        return behavior


def _writing(inner, send_timeout: float):
    """A response-streaming handler as a coroutine that writes each message itself. A client that reads
    none of it for `send_timeout` has its call ended (ClientStalled) and the generator closed: before, a
    CreateBundle its client stopped reading held its call, its open archive and the bundle's snapshot on
    disk for as long as the client stayed connected."""

    async def run(request, context):
        result = inner(request, context)
        if not inspect.isasyncgen(result):  # already writes with context.write()
            return await result
        async with contextlib.aclosing(result) as messages:
            async for message in messages:
                try:
                    await sent(context.write(message), send_timeout)
                except ClientStalled as exc:
                    await end_stream(context, exc, send_timeout)
        return None

    return run


def _reading(inner, receive_timeout: float):
    """A request-streaming handler whose client sends nothing for `receive_timeout` has its call ended
    (RequestTimeout, DEADLINE_EXCEEDED): before, an ImportBundle its client stopped feeding held its call,
    the upload's lock (a resumed upload got ABORTED) and the drain for as long as the client stayed connected.
    The handler's own clean-up runs first (ImportBundle keeps the bytes received, to resume)."""

    async def run(requests, context):
        try:
            return await inner(received(requests, receive_timeout), context)
        except RequestTimeout as exc:
            await abort_with(context, exc)

    return run


async def _refuse(context: grpc.aio.ServicerContext) -> None:
    # The client's id when it is sane, as everywhere else (the interceptor has not run for this call).
    await abort_with(context, ServerShuttingDown(), request_id(metadata_value(context, REQUEST_ID)))


class MethodSymbolPool:
    """The descriptor pool reflection reads, answering method names too: the reflection spec's
    file_containing_symbol takes `<package>.<service>[.<method>]` (`grpcurl describe` of a method asks
    so), and protobuf's pool knows no method symbols."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str):
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return service.file


_CallDetails = namedtuple("_CallDetails", ("method", "invocation_metadata"))


class _AllServers:
    """Registers a service on several servers: the generated add_*_to_server functions call these."""

    def __init__(self, *servers: grpc.aio.Server) -> None:
        self._servers = servers
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.handlers.extend(handlers)
        for server in self._servers:
            server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name, method_handlers) -> None:
        """Not registered: the generic handler added with them serves the same methods. grpc.aio's
        serving loop keeps one pending call per registered method and re-waits on all of them
        (asyncio.wait) for every call it accepts: 26 instead of 10 us per call with this
        server's 17 methods."""


def _client_connection_limits(settings: Settings) -> list[tuple[str, int]]:
    """What one connection to the gRPC port may hold. REQUEST_BODY_TIMEOUT_SECONDS bounds idle ones
    as it does REST's: gRPC keeps a connection without calls open forever by default, so clients that
    connect and never call (nor even finish the HTTP/2 preface, for 120 s) held a descriptor each
    until the process ran out and refused every client, REST's too. Idle ones get a GOAWAY; a channel
    reconnects on its next call. At most MAX_CALLS_PER_CONNECTION calls at once, MAX_METADATA_BYTES of request
    metadata a call, and keepalive pings
    as often as MIN_CLIENT_PING_INTERVAL_MS (pings are no calls: they do not keep a connection from idling)."""
    idle_ms = max(1, round(settings.request_body_timeout_seconds * 1000))
    return [("grpc.max_metadata_size", MAX_METADATA_BYTES), ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.max_connection_idle_ms", idle_ms), ("grpc.server_handshake_timeout_ms", idle_ms),
            ("grpc.max_concurrent_streams", MAX_CALLS_PER_CONNECTION),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS)]


class GrpcServer:
    """One cell's gRPC servers: `internal` on a unix socket for the in-process REST facade, `public`
    on the TCP port (None with GRPC_PORT=0). Shutdown, driven by aiproxy.cell:
    stop_accepting() (health NOT_SERVING, the public port closes and refuses new calls), then the
    calls in flight finish (busy() says how many), end_calls() ends the rest, stop() closes both."""

    def __init__(self, settings: Settings, chat: ChatServicer, unix_socket: str) -> None:
        self._settings = settings
        self.unix_socket = unix_socket
        self.calls = CallTracker(settings.request_body_timeout_seconds)
        keys = KeyRing(settings.api_keys, settings.admin_api_keys)

        def interceptors() -> list[grpc.aio.ServerInterceptor]:  # each server its own (WrappingInterceptor)
            return [self.calls.interceptor(), AuthInterceptor(keys, settings.models_require_auth, chat.log_rejection)]

        limit = settings.grpc_message_bytes
        sizes = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        self._internal_interceptors = interceptors()
        self.internal = grpc.aio.server(interceptors=self._internal_interceptors, options=[_MINIMAL_STACK])
        self.public: grpc.aio.Server | None = None
        servers = [self.internal]
        if settings.grpc_port:
            self.public = grpc.aio.server(
                interceptors=interceptors(),
                options=[*sizes, ("grpc.so_reuseport", 1), ("grpc.keepalive_permit_without_calls", 1),
                         *_client_connection_limits(settings)],
            )
            servers.append(self.public)
            reflection.enable_server_reflection(
                [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], self.public,
                pool=MethodSymbolPool(descriptor_pool.Default()),
            )
        self._services = both = _AllServers(*servers)
        chat_pb2_grpc.add_ChatServiceServicer_to_server(chat, both)
        add_log_service(both, settings)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, both)
        self._hop = CellHopServicer()
        hop_pb2_grpc.add_CellHopServicer_to_server(self._hop, _AllServers(self.internal))
        self.tcp_port: int | None = None
        self._public_stopping: asyncio.Task | None = None

    def internal_channel(self) -> grpc.aio.Channel:
        """The facade's channel to `internal`."""
        return grpc.aio.insecure_channel(f"unix:{self.unix_socket}",
                                         options=[_MINIMAL_STACK, ("grpc.enable_retries", 0)])

    def _listen(self) -> None:
        # grpc's own failure is a "Failed to bind" traceback naming neither the cause nor the setting.
        advice = f"the cell's internal unix socket {self.unix_socket}: {{}}; set TMPDIR to a short, writable directory"
        if len(os.fsencode(self.unix_socket)) > UNIX_PATH_MAX:
            raise ConfigError(advice.format(f"longer than the {UNIX_PATH_MAX} bytes a unix socket path may have"))
        try:
            self.internal.add_insecure_port(f"unix:{self.unix_socket}")
        except RuntimeError:
            raise ConfigError(advice.format("cannot create it")) from None
        settings = self._settings
        if self.public is None:
            return
        address = host_port(settings.grpc_host, settings.grpc_port)
        try:
            if settings.tls.enabled:
                self.tcp_port = self.public.add_secure_port(address, server_credentials(settings))
            else:
                self.tcp_port = self.public.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind", which names no setting
            raise ConfigError(f"cannot listen for gRPC on {address} (in use, not a local address, or not permitted):"
                              " stop the other server, or set GRPC_HOST / GRPC_PORT (0 turns it off)") from None

    async def _intercepted(self, method: str) -> grpc.RpcMethodHandler:
        """The internal server's handler of `method`, behind its interceptors as grpc.aio puts it there."""

        async def find(details) -> grpc.RpcMethodHandler | None:
            return next(filter(None, (handler.service(details) for handler in self._services.handlers)), None)

        continuation = find
        for interceptor in reversed(self._internal_interceptors):
            continuation = functools.partial(interceptor.intercept_service, continuation)
        return await continuation(_CallDetails(method, ()))

    def _servers(self) -> list[grpc.aio.Server]:
        return [server for server in (self.public, self.internal) if server is not None]

    async def start(self) -> None:
        try:
            self._listen()
        except BaseException:
            for server in self._servers():  # else grpc.aio's finaliser runs on a closed loop and prints a traceback
                await server.stop(None)
            raise
        self._hop.carry(*[await self._intercepted(method) for method in CARRIED_METHODS])
        for server in self._servers():
            await server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop_accepting(self, grace: float) -> None:
        """Health turns NOT_SERVING (Watch streams hear it, and the facade's /ready answers 503); the
        public port closes and its connections get GOAWAY, so new calls go elsewhere while the calls
        in flight go on. `grace` is only a backstop: end_calls() is what ends them."""
        await self.health.enter_graceful_shutdown()
        if self.public is not None:
            self._public_stopping = asyncio.create_task(self.public.stop(grace + 2 * FINISH_SECONDS))
            await asyncio.sleep(0)  # grpc.aio closes the listener as the task starts

    def busy(self) -> int:
        return self.calls.busy()

    def end_calls(self) -> None:
        self.calls.end_all()

    async def stop(self) -> None:
        """After end_calls(): the calls get FINISH_SECONDS to send their status, then grpc.aio cancels them."""
        await asyncio.gather(*(server.stop(FINISH_SECONDS) for server in self._servers()))
        if self._public_stopping is not None:
            await self._public_stopping
