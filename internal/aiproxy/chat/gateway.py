"""Chat orchestration, transport-free: validate, route, call the provider, record the exchange.
The gRPC servicer drives it; dicts in, dicts out (OpenAI JSON shapes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiproxy.auth import Caller
from aiproxy.chat.assemble import StreamAssembler
from aiproxy.chat.record import Exchange, RequestLog
from aiproxy.chat.validate import validate_chat_request
from aiproxy.config import ProviderSettings
from aiproxy.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    OutOfFileDescriptors,
    ProviderNotConfigured,
    ServerShuttingDown,
    UpstreamBadResponse,
)
from aiproxy.identity import KeyHasher
from aiproxy.providers import Provider, build_provider
from aiproxy.providers.base import UpstreamRequest
from aiproxy.routing import ModelRouter
from aiproxy.sse import Comment

CLIENT_CLOSED = 499  # nginx's convention for a request the client gave up on


@dataclass(slots=True)
class Call:
    exchange: Exchange
    provider: Provider
    upstream: UpstreamRequest


class ChatGateway:
    def __init__(
        self,
        router: ModelRouter,
        provider_settings: dict[str, ProviderSettings],
        request_log: RequestLog,
        hasher: KeyHasher,
        server_id: str,
        max_answer_size: int,
    ) -> None:
        self.router = router
        # What one JSON answer may hold (Settings.grpc_message_bytes); a streamed answer is kept whole
        # for the request log, so it may not grow beyond it either: an endless stream would fill memory.
        self._max_answer = max_answer_size
        self._settings = provider_settings
        self._providers: dict[str, Provider] = {}
        self._log = request_log
        self._hash = hasher
        self.server_id = server_id

    def _provider(self, name: str, alias: str) -> Provider:
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        settings = self._settings.get(name)
        if settings is None:
            raise ProviderNotConfigured(f"Model '{alias}' maps to provider '{name}', which is not configured.")
        if settings.api_key_required and not settings.api_key:
            # A provider declared without api_key_env has no variable of its own: name the setting itself.
            setting = settings.api_key_env or (
                f"PROVIDERS__{name.upper()}__API_KEY (or PROVIDERS__{name.upper()}__API_KEY_REQUIRED=false)"
            )
            raise ProviderNotConfigured(
                f"Model '{alias}' needs the '{name}' provider, which has no API key: the operator must set {setting}."
            )
        try:
            provider = self._providers[name] = build_provider(settings)
        except OSError as exc:  # its module or CA file could not be opened
            if OutOfFileDescriptors.caused(exc):
                raise OutOfFileDescriptors() from None
            raise
        return provider

    def begin(self, caller: Caller | None, request_id: str, transport: str, stream: bool) -> Exchange:
        return Exchange(
            request_id=request_id,
            transport=transport,
            server_id=self.server_id,
            api_key_hash=self._hash(caller.key) if caller else None,
            stream=stream,
        )

    @staticmethod
    def attach_body(exchange: Exchange, body: dict) -> None:
        exchange.request = body
        exchange.model_original = body.get("model") if isinstance(body.get("model"), str) else None

    def prepare(self, exchange: Exchange, body: dict) -> Call:
        self.attach_body(exchange, body)
        validate_chat_request(body)
        if exchange.stream and "stream" not in body:
            body["stream"] = True  # StreamChatCompletion says it: the upstream must be asked to stream
        if exchange.stream != bool(body.get("stream")):
            rpc = "StreamChatCompletion" if body.get("stream") else "CreateChatCompletion"
            raise InvalidRequest(f"'stream' is {str(bool(body.get('stream'))).lower()}: call {rpc}", param="stream")
        route = self.router.resolve(body["model"])
        exchange.model_mapped = route.model
        exchange.provider = route.provider
        provider = self._provider(route.provider, body["model"])
        upstream_body = dict(body)
        upstream_body["model"] = route.model
        return Call(exchange, provider, UpstreamRequest(upstream_body, exchange.request_id))

    def finish(self, exchange: Exchange, exc: BaseException | None = None) -> None:
        if isinstance(exc, GatewayError):
            exchange.fail(exc)
        elif isinstance(exc, asyncio.CancelledError) and exc.args == (ServerShuttingDown.CANCEL_MESSAGE,):
            exchange.fail(ServerShuttingDown())  # ended by the gateway's shutdown deadline, not by the client
        elif isinstance(exc, asyncio.CancelledError):
            exchange.status_code = CLIENT_CLOSED
            exchange.error = {"message": "client cancelled the request", "type": "cancelled", "code": None}
        elif exc is not None:  # a bug: the RPC layer logs the traceback and answers InternalError
            exchange.fail(InternalError())
        self._log.write(exchange)

    async def complete(self, call: Call) -> tuple[dict, dict[str, str]]:
        result = await call.provider.complete(call.upstream)
        call.exchange.response = result.body
        return result.body, result.headers

    @contextlib.asynccontextmanager
    async def open_stream(self, call: Call) -> AsyncIterator[tuple[AsyncIterator[list[dict]], dict[str, str]]]:
        """`async with` the upstream's chunks in batches (see providers.base.UpstreamStream; an SSE
        comment the upstream sent is an `aiproxy.sse.Comment` among them), and its headers. Leaving
        the block, however (a cancelled call, a failed write), closes the upstream call and records
        the answer so far. Not left to the batches' own `finally`: a generator closed before its
        first batch (a call cancelled while its headers went out) never runs it, and the upstream
        call stayed open until the garbage collector found it."""
        stream = await call.provider.open_stream(call.upstream)
        assembler = StreamAssembler()
        batches = self._relay(call.exchange, stream, assembler)
        try:
            yield batches, stream.headers
        finally:
            try:
                await batches.aclose()
            finally:
                call.exchange.response = assembler.result(fallback_usage=stream.usage)
                await stream.aclose()

    async def _relay(self, exchange: Exchange, stream, assembler: StreamAssembler) -> AsyncIterator[list[dict]]:
        async for batch in stream:
            for chunk in batch:
                if type(chunk) is Comment:  # an upstream keep-alive: passed on, not part of the answer
                    continue
                if exchange.first_token is None:
                    exchange.first_token = time.perf_counter()
                assembler.add(chunk)
            if assembler.size > self._max_answer:
                raise UpstreamBadResponse(
                    f"The upstream streamed an answer longer than the gateway relays ({self._max_answer}"
                    " characters in all; the operator sets it with MAX_BODY_BYTES)."
                )
            yield batch

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
