"""ChatService servicer: proto <-> OpenAI dicts around aiproxy.chat.ChatGateway."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc

from aiproxy.auth import Caller
from aiproxy.chat.gateway import ChatGateway
from aiproxy.chat.record import Exchange
from aiproxy.errors import (
    ClientDeadlineExceeded,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    ServerShuttingDown,
    UpstreamBadResponse,
)
from aiproxy.protojson import (
    JSONTooDeep,
    KeyInTwoPlaces,
    NonFiniteNumber,
    integer_beyond_64_bits_in,
    json_to_message,
    message_to_json,
)
from aiproxy.rpc.interceptor import CURRENT_CALLER, CURRENT_REQUEST_ID, metadata_value
from aiproxy.rpc.status import REQUEST_ID, abort_with
from aiproxy.rpc.steps import end_stream, sent
from aiproxy.sse import Comment
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

TRANSPORT_KEY = "x-aiproxy-transport"  # set by the REST facade: "http"
MODELS_CREATED = 1677610602  # the seed's fixed `created` for listed models
# Chat RPCs -> whether they stream (their refusals are request-logged).
_CHAT_METHODS = {"CreateChatCompletion": False, "StreamChatCompletion": True, "StreamChatCompletionBatches": True}
# Chunks per stream message: at most 1, then 8, then 64, so the first event of a burst never waits
# while the rest is converted, and a long burst still crosses the channel in a few messages (sizes
# chosen by same-run A/B, docs/benchmarks.md).
BATCH_GROWTH = 8
MAX_BATCH = 64


def request_body(request: chat_pb2.ChatCompletionRequest) -> dict:
    """The OpenAI JSON body of a request. gRPC clients may send what JSON cannot hold: NaN or Infinity
    in doubles, broken JSON in the *_json fields. (A body nested too deeply to send upstream is
    refused where it is written, by the provider.)"""
    try:
        return message_to_json(request)
    except NonFiniteNumber as exc:
        raise InvalidRequest(f"'{exc.param}' must be a finite number: JSON has no NaN or Infinity",
                             param=exc.param, code="invalid_value") from None
    except KeyInTwoPlaces as exc:
        raise InvalidRequest(f"{exc}: set it once", param=exc.param, code="invalid_value") from None
    except ValueError:
        raise InvalidRequest("extra_json and the *_json fields must hold valid JSON (extra_json: an object)") from None


def answer_message(body: dict, message_class):
    """An upstream answer (or chunk) as a proto message; one nested too deeply to relay is a bad
    upstream response, not the client's error."""
    try:
        return json_to_message(body, message_class)
    except JSONTooDeep:
        raise UpstreamBadResponse("The upstream answer nests JSON more than 254 levels deep; the gateway cannot"
                                  " relay it.") from None


def _chunks(part: list) -> list[chat_pb2.ChatCompletionChunk]:
    """The chunks of a part of a relayed batch, without the upstream's SSE comments."""
    return [answer_message(item, chat_pb2.ChatCompletionChunk) for item in part if type(item) is not Comment]


def _batches(part: list) -> Iterator[chat_pb2.ChatCompletionChunkBatch]:
    """A relayed part as batches in the upstream's order: the facade sends a batch's comments ahead
    of its chunks, so a comment that follows a chunk starts the next batch."""
    comments: list[str] = []
    chunks: list[chat_pb2.ChatCompletionChunk] = []
    for item in part:
        if type(item) is not Comment:
            chunks.append(answer_message(item, chat_pb2.ChatCompletionChunk))
            continue
        if chunks:
            yield chat_pb2.ChatCompletionChunkBatch(chunks=chunks, comments=comments)
            comments, chunks = [], []
        comments.append(item)
    yield chat_pb2.ChatCompletionChunkBatch(chunks=chunks, comments=comments)


def _model(model_id: str, provider: str) -> chat_pb2.Model:
    return chat_pb2.Model(id=model_id, object="model", created=MODELS_CREATED, owned_by=provider)


# The client's deadline runs out first: its clock started before the request's trip to the server,
# and its cancel (RST_STREAM) can arrive while the server's copy of the deadline still has that
# trip's time left (milliseconds, more on a loaded machine). A client that gives up this close to
# its deadline is taken as ended by it.
DEADLINE_SLACK_S = 0.25


def ended_by(exc: BaseException, context: grpc.aio.ServicerContext) -> BaseException:
    """What ended a call, for its record: grpc.aio cancels the handler once the client's deadline has
    passed (or its client, at its own deadline, cancels), and that is the deadline, not a client that
    gave up."""
    if isinstance(exc, asyncio.CancelledError) and exc.args != (ServerShuttingDown.CANCEL_MESSAGE,):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK_S:
            return ClientDeadlineExceeded()
    return exc


def transport_of(context: grpc.aio.ServicerContext) -> str:
    # Only the facade, on the cell's internal unix socket, may say so: a client of the public port
    # sending the key would be logged as REST.
    if metadata_value(context, TRANSPORT_KEY) == "http" and context.peer().startswith("unix:"):
        return "http"
    return "grpc"


# Every ChatServicer is served behind AuthInterceptor (rpc.server.GrpcServer, its one construction
# path), which sets CURRENT_REQUEST_ID, never empty, before any method or log_rejection runs.
class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, gateway: ChatGateway, max_body_bytes: int, max_message_bytes: int, send_timeout: float) -> None:
        self._gateway = gateway
        self._max_body = max_body_bytes  # MAX_BODY_BYTES: what a gRPC client's request may hold, as a REST body
        self._max_bytes = max_message_bytes  # gRPC's message limit (Settings.grpc_message_bytes)
        self._send_timeout = send_timeout  # REQUEST_BODY_TIMEOUT_SECONDS: how long a stream write may wait
        self._models = [_model(r.alias, r.provider) for r in gateway.router.aliases]

    def log_rejection(self, method: str, context, exc: GatewayError, caller: Caller | None) -> None:
        """Refusals of chat calls before they start (a key refused, a message that did not parse) still get a
        request log record (status 401/403/400), with the key's hash when the key was good. Never with a
        body: a refused key's (or there is none) would let a client without a key write up to
        MAX_BODY_BYTES a call into the log, on disk and in the search index."""
        name = method.rsplit("/", 1)[-1]
        if name not in _CHAT_METHODS:
            return
        transport = transport_of(context)
        exchange = self._gateway.begin(caller, CURRENT_REQUEST_ID.get(), transport, _CHAT_METHODS[name])
        self._gateway.finish(exchange, exc)

    def _body(self, request: chat_pb2.ChatCompletionRequest, transport: str) -> dict:
        """request_body(), after the checks the REST facade makes of the body it reads, for a gRPC
        client's request: at most MAX_BODY_BYTES (gRPC's message limit leaves 1 MiB more, for what
        surrounds a body in other messages), and no integer beyond 64 bits in its JSON text."""
        if transport == "grpc":
            if request.ByteSize() > self._max_body:
                raise PayloadTooLarge.over(self._max_body, "request")
            huge = integer_beyond_64_bits_in(request)
            if huge is not None:
                raise InvalidRequest.integer_beyond_64_bits(huge)
        return request_body(request)

    def _begin(self, request, context, stream: bool) -> Exchange:
        exchange = self._gateway.begin(CURRENT_CALLER.get(), CURRENT_REQUEST_ID.get(), transport_of(context), stream)
        exchange.model_original = request.model or None  # logged even when the body is refused unread
        return exchange

    async def CreateChatCompletion(self, request, context):
        exchange = self._begin(request, context, stream=False)
        request_id, transport = exchange.request_id, exchange.transport
        failure: BaseException | None = None
        try:
            call = self._gateway.prepare(exchange, self._body(request, exchange.transport))
            body, headers = await self._gateway.complete(call)
            answer = self._relayable(answer_message(body, chat_pb2.ChatCompletion))
            metadata = ((REQUEST_ID, request_id), *headers.items())
            if transport == "http":
                # The REST facade reads them from the trailers, which leave with the response:
                # one C-core batch less per call (-0.34 ms CPU, -0.39 ms p50 at c=1; docs/benchmarks.md).
                context.set_trailing_metadata(metadata)
            else:
                await context.send_initial_metadata(metadata)
            return answer
        except GatewayError as exc:
            failure = exc
            await abort_with(context, exc, request_id)
        except BaseException as exc:  # cancellation and bugs are logged too
            failure = ended_by(exc, context)
            raise
        finally:
            self._gateway.finish(exchange, failure)

    async def StreamChatCompletion(self, request, context):
        async def write(part: list) -> None:
            for chunk in _chunks(part):  # an upstream's SSE comments have no place here: HTTP/2 keeps a call alive
                await context.write(self._relayable(chunk))

        await self._stream(request, context, write)

    async def StreamChatCompletionBatches(self, request, context):
        async def write(part: list) -> None:
            for batch in _batches(part):
                await context.write(self._relayable(batch))

        await self._stream(request, context, write)

    def _relayable(self, message):
        """`message`, unless it is too large for one gRPC message (grpc.aio would fail the call with
        the gateway's own 500): an upstream answer the gateway cannot relay."""
        if message.ByteSize() > self._max_bytes:
            raise UpstreamBadResponse.too_large("The upstream", self._max_bytes)
        return message

    async def _stream(self, request, context, write) -> None:
        # context.write() rather than yield: one coroutine for both RPCs, and a cancelled call
        # raises CancelledError right here, so the request log records it as such.
        exchange = self._begin(request, context, stream=True)
        request_id = exchange.request_id
        failure: BaseException | None = None
        try:
            call = self._gateway.prepare(exchange, self._body(request, exchange.transport))
            async with self._gateway.open_stream(call) as (batches, headers):
                await context.send_initial_metadata(((REQUEST_ID, request_id), *headers.items()))
                limit = 1
                async for batch in batches:
                    while batch:
                        part, batch = batch[:limit], batch[limit:]
                        limit = min(limit * BATCH_GROWTH, MAX_BATCH)
                        await sent(write(part), self._send_timeout)
        except GatewayError as exc:  # ClientStalled too: logged 408
            failure = exc
            await end_stream(context, exc, self._send_timeout, request_id)
        except BaseException as exc:
            failure = ended_by(exc, context)
            raise
        finally:
            self._gateway.finish(exchange, failure)

    async def ListModels(self, request, context):
        return chat_pb2.ListModelsResponse(object="list", data=self._models)

    async def GetModel(self, request, context):
        """Any name a chat request may use: an alias (as configured) or a name a pattern maps."""
        try:
            route = self._gateway.router.resolve(request.id)
        except GatewayError as exc:
            await abort_with(context, exc)
        model_id = request.id if route.is_pattern else route.alias
        return _model(model_id, route.provider)


