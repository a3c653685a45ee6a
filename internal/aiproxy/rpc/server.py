"""The grpc.aio server: ChatService, LogService, standard health checking and reflection."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aiproxy.auth import KeyRing
from aiproxy.config import ConfigError, Settings
from aiproxy.rpc.chat_service import ChatServicer
from aiproxy.rpc.interceptor import AuthInterceptor
from aiproxy.rpc.log_service import add_log_service
from aiproxypb.v1 import chat_pb2_grpc

SERVICE_NAMES = ("aiproxy.v1.ChatService", "aiproxy.v1.LogService")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise RuntimeError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    tls = settings.tls
    key, cert = _read(tls.key_file, "key file"), _read(tls.cert_file, "certificate file")
    if tls.client_ca_file:
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=_read(tls.client_ca_file, "client CA file"), require_client_auth=True
        )
    return grpc.ssl_server_credentials([(key, cert)])


class GrpcServer:
    """One cell's gRPC server: a unix socket for the in-process REST facade, plus the public TCP port."""

    def __init__(self, settings: Settings, chat: ChatServicer, unix_socket: str) -> None:
        self._settings = settings
        self.unix_socket = unix_socket
        interceptor = AuthInterceptor(
            KeyRing(settings.api_keys, settings.admin_api_keys), settings.models_require_auth, chat.log_rejection
        )
        limit = settings.max_body_bytes + 1024 * 1024
        self.server = grpc.aio.server(
            interceptors=[interceptor],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 1),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        chat_pb2_grpc.add_ChatServiceServicer_to_server(chat, self.server)
        add_log_service(self.server, settings)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.tcp_port: int | None = None

    def _listen(self) -> None:
        self.server.add_insecure_port(f"unix:{self.unix_socket}")
        settings = self._settings
        if not settings.grpc_port:
            return
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            if settings.tls.enabled:
                self.tcp_port = self.server.add_secure_port(address, server_credentials(settings))
            else:
                self.tcp_port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind", which names no setting
            raise ConfigError(f"cannot listen for gRPC on {address} (in use, not a local address, or not permitted):"
                              " stop the other server, or set GRPC_HOST / GRPC_PORT (0 turns it off)") from None

    async def start(self) -> None:
        try:
            self._listen()
        except BaseException:
            await self.server.stop(None)  # else grpc.aio's finaliser runs on a closed loop and prints a traceback
            raise
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
