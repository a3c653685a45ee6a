"""One cell: the grpc.aio server and the aiohttp facade on one event loop, the facade reaching
the services through a unix-socket gRPC channel. `--workers N` runs N cells on shared ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import tempfile
from pathlib import Path

import grpc
from aiohttp import web
from loguru import logger

from aiproxy.auth import KeyRing
from aiproxy.chat.gateway import ChatGateway
from aiproxy.chat.record import RequestLog
from aiproxy.config import ConfigError, Settings
from aiproxy.errors import AuthenticationFailed, GatewayError
from aiproxy.httpapi.app import create_app
from aiproxy.httpapi.errors import error_response
from aiproxy.httpapi.metadata import REQUEST_ID_KEY
from aiproxy.identity import KeyHasher
from aiproxy.logstore.live import run_live_ingest
from aiproxy.logstore.server_identity import resolve_server_id
from aiproxy.logstore.settings import LogStoreSettings
from aiproxy.routing import ModelRouter
from aiproxy.rpc.chat_service import ChatServicer
from aiproxy.rpc.server import GrpcServer


def http_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.tls
    if not tls.enabled:
        return None
    for name, path in (("TLS_CERT_FILE", tls.cert_file), ("TLS_KEY_FILE", tls.key_file)):
        if not Path(path).is_file():
            raise ConfigError(f"{name}={path}: file not found")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TLS_CERT_FILE and TLS_KEY_FILE do not form a valid pair ({exc.reason or exc}); check both files"
        ) from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def build_gateway(settings: Settings) -> ChatGateway:
    router = ModelRouter.from_file(settings.config_path, set(settings.providers))
    return ChatGateway(
        router,
        settings.providers,
        RequestLog(settings.request_log_enabled),
        KeyHasher(settings.key_hash_secret, settings.log_dir),
        # The same identity the log store stamps on its rows.
        resolve_server_id(LogStoreSettings.from_mapping(settings.logdb)),
    )


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
        gateway.finish(exchange, exc)
        return error_response(exc)

    return reject


async def serve_cell(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ssl_context = http_ssl_context(settings)
    gateway = build_gateway(settings)
    socket_path = os.path.join(tempfile.gettempdir(), f"aiproxy-{os.getpid()}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    grpc_server = GrpcServer(settings, ChatServicer(gateway), socket_path)
    await grpc_server.start()
    channel = grpc.aio.insecure_channel(
        f"unix:{socket_path}",
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes + 1024 * 1024),
            ("grpc.max_send_message_length", settings.max_body_bytes + 1024 * 1024),
        ],
    )
    app = create_app(settings, channel, body_rejector(settings, gateway))
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=settings.shutdown_grace_seconds
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context, reuse_port=True)
    try:
        await site.start()
    except OSError:  # the port is taken: close what is open, so the process can say so and exit
        await runner.cleanup()
        await grpc_server.stop(0)
        await channel.close()
        raise
    background = _start_background(settings, stop)
    scheme = "https" if ssl_context else "http"
    logger.info(
        "aiproxy listening",
        rest=f"{scheme}://{settings.host}:{settings.port}",
        grpc=f"{settings.grpc_host}:{grpc_server.tcp_port}" if grpc_server.tcp_port else None,
        tls=bool(ssl_context),
        server_id=gateway.server_id,
    )
    await stop.wait()
    logger.info("shutting down", grace_seconds=settings.shutdown_grace_seconds)
    # Stop accepting, let in-flight HTTP requests and streams finish (bounded), then gRPC.
    await runner.cleanup()
    await grpc_server.stop(settings.shutdown_grace_seconds)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await channel.close()
    await gateway.aclose()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    logger.info("stopped")


def _start_background(settings: Settings, stop: asyncio.Event) -> list[asyncio.Task]:
    # Live ingestion returns at once unless LOGDB_ENABLED.
    return [asyncio.create_task(run_live_ingest(settings, stop), name="live-ingest")]
