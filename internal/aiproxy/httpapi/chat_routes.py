"""OpenAI REST -> ChatService: /v1/chat/completions (JSON and SSE) and /v1/models."""

from __future__ import annotations

import asyncio
import time

import grpc
import orjson
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_urldispatcher import _default_expect_handler  # no public name: test_lifecycle notices a move

from aiproxy.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServerShuttingDown,
)
from aiproxy.httpapi import carried_calls, hop, sse
from aiproxy.httpapi.errors import (
    error_response,
    json_response,
    parser_reason,
    rpc_error_parts,
    rpc_error_response,
)
from aiproxy.httpapi.metadata import rpc_metadata
from aiproxy.protojson import integer_beyond_64_bits, json_to_message, message_to_json
from aiproxy.providers.base import forwardable_headers
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

STUB = web.AppKey("chat_stub", chat_pb2_grpc.ChatServiceStub)
CALLS = web.AppKey("chat_calls", carried_calls.CarriedCalls)  # CreateChatCompletion, carried over the cell's hop stream
# Called for requests refused before they can become an RPC: an Authorization value metadata cannot
# carry (401), a body that is too large (413), too slow to arrive (408), not a JSON object or nested
# too deeply (400). reject(request, error) checks the key first (401 wins) and writes the request log record.
REJECT = web.AppKey("reject_body", object)
BODY_TIMEOUT = web.AppKey("body_timeout", float)  # REQUEST_BODY_TIMEOUT_SECONDS
# Set when the shutdown deadline ends what is still in flight (aiproxy.cell).
ENDING = web.AppKey("ending", asyncio.Event)
# time.perf_counter() when a chat request's head was read: a body refused (408, 413, 400) is timed from it.
ARRIVED = web.RequestKey("arrived", float)


def _too_large(request: web.Request) -> PayloadTooLarge:
    return PayloadTooLarge.over(request.client_max_size)


def _declared_too_large(request: web.Request) -> bool:
    return (request.content_length or 0) > request.client_max_size


async def _read_body(request: web.Request) -> bytes | bytearray:
    if _declared_too_large(request):  # refused before a byte is read
        raise _too_large(request)
    timeout = request.app[BODY_TIMEOUT]
    try:
        if request.content.is_eof():  # the body came with the headers (the usual case): no timer
            return await request.read()
        async with asyncio.timeout(timeout):  # a slow or stalled body must not hold the connection
            return await _unless_ended(_read_uncached(request), request.app[ENDING])
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(request) from None
    except web.RequestPayloadError as exc:  # the client's bytes, not the gateway: a 400, not a 500
        # The cause is aiohttp's parser error: a body its Content-Encoding cannot decode, broken chunking.
        cause = exc.__cause__
        reason = parser_reason(cause) if isinstance(cause, HttpProcessingError) else "its framing is broken"
        raise InvalidRequest(
            f"The request body could not be read ({reason}); send it as its Content-Encoding "
            "and Transfer-Encoding headers say."
        ) from None
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {timeout:g} seconds; send it at once "
            "(the operator sets the limit with REQUEST_BODY_TIMEOUT_SECONDS)."
        ) from None


async def _read_uncached(request: web.Request) -> bytearray:
    """request.read() of a body still arriving (a large one), without its copies: aiohttp reads into a
    bytearray, copies that to bytes and keeps them on the request until the response is sent, so a
    body near MAX_BODY_BYTES was held twice while read and once more through the whole call."""
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > request.client_max_size:
            raise _too_large(request)
    return body


async def _unless_ended(read, ending: asyncio.Event) -> bytes | bytearray:
    """The body, unless the shutdown deadline comes first: then the request ends as every other one
    still running does, a 503 with its record (else its connection was closed with neither)."""
    reading, ended = asyncio.ensure_future(read), asyncio.ensure_future(ending.wait())
    try:
        await asyncio.wait((reading, ended), return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        reading.cancel()  # nothing when it is done; else a timeout or the deadline came first
    if reading.done() and not reading.cancelled():
        return reading.result()
    raise ServerShuttingDown()


async def _expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue`: invite the body only when it can be accepted; a declared size over
    the limit goes on to the handler, whose 413 then answers instead of the 100."""
    if not _declared_too_large(request):
        await _default_expect_handler(request)  # aiohttp's: sends 100 Continue, refuses other expectations


_UTF8_BOM = b"\xef\xbb\xbf"


def _parsed(raw: bytes | bytearray):
    """orjson's parse; a leading UTF-8 byte order mark, which orjson refuses, is skipped, as RFC 8259
    section 8.1 lets parsers do (Windows tools write one). Only a failed parse looks for it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if not raw.startswith(_UTF8_BOM):
            raise
    return orjson.loads(raw[len(_UTF8_BOM):])


async def _read_json_object(request: web.Request) -> dict:
    raw = await _read_body(request)
    try:
        body = _parsed(raw)
    except orjson.JSONDecodeError as exc:
        if "not valid UTF-8" in str(exc):  # orjson's words for Latin-1, UTF-16, ... ("surrogates not allowed")
            raise InvalidRequest("The request body is not UTF-8 text, which JSON must be (RFC 8259 section 8.1); "
                                 "send it encoded as UTF-8.") from None
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}). Send a JSON object, "
            "see https://platform.openai.com/docs/api-reference/chat/create"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {type(body).__name__}.")
    huge = integer_beyond_64_bits(raw)
    if huge is not None:
        raise InvalidRequest.integer_beyond_64_bits(huge)
    return body


def _forwarded(metadata) -> dict[str, str]:
    return forwardable_headers(dict(metadata or ()))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    request[ARRIVED] = time.perf_counter()
    try:
        metadata = rpc_metadata(request)
        body = await _read_json_object(request)
        message = json_to_message(body, chat_pb2.ChatCompletionRequest)  # JSONTooDeep is a 400
        stream = body.get("stream") is True
        del body  # the message says it all: a large body is not held through the call beside it
    except GatewayError as exc:
        response = request.app[REJECT](request, exc)
        if not request.content.is_eof():  # close rather than read the rest of a refused body
            response.force_close()
        return response
    data = message.SerializeToString()
    del message  # a large request is held once, as the bytes the call sends
    calls = request.app[CALLS]
    if stream:
        call = calls.stream(data, metadata)
        del data
        return await _stream(request, call)
    try:
        response, trailing = await calls.call(data, metadata)  # cancelled with this handler, and its upstream call
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    del data
    answer = message_to_json(chat_pb2.ChatCompletion.FromString(response))
    # Let go: a large answer is held as its JSON text alone while a slow client reads it, and as
    # dict and text (not also as its message) while that is made.
    del response
    answer = json_response(answer, headers=_forwarded(trailing))
    return await _answer(request, answer)


async def _answer(request: web.Request, response: web.Response) -> web.StreamResponse:
    """A JSON answer. aiohttp's own write of it waits for the client with no time limit, holding the
    answer and the connection while a client reads none of it. One that may not fit the transport's
    buffer is written here in pieces through _send, so a client that reads nothing for twice
    REQUEST_BODY_TIMEOUT_SECONDS loses its connection, as a stream's does, and one reading slowly
    but steadily gets it all. Small answers, nearly all, go to aiohttp as they are."""
    body = response.body
    transport = request.transport
    if transport is None or (transport.get_write_buffer_size() + len(body) + FRAMING_ROOM
                             <= transport.get_write_buffer_limits()[1]):
        return response
    answer = web.StreamResponse(status=response.status, headers=response.headers)
    answer.content_length = len(body)
    await answer.prepare(request)
    view = memoryview(body)
    try:
        for start in range(0, len(view), ANSWER_PIECE):
            await _send(request, answer, view[start:start + ANSWER_PIECE])
        await answer.write_eof()
    except (_ClientStalled, ConnectionResetError):
        pass  # the connection is gone; the answer was logged when the call ended
    return answer


ANSWER_PIECE = 256 * 1024  # _answer: the answer is written this much at a time


async def _stream(request: web.Request, call: carried_calls.CarriedStream) -> web.StreamResponse:
    # The batched RPC: chunks that arrived together cross the hop as one message and leave in one
    # write, each still its own SSE event.
    try:
        # Nothing is sent before the first batch, so errors before it keep their HTTP status.
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc)
        response = web.StreamResponse(status=200, headers={**sse.HEADERS, **_forwarded(await call.initial_metadata())})
        if request.version < HttpVersion11:
            # No chunking in HTTP/1.0: the stream ends with the connection, which aiohttp would keep
            # open for a keep-alive client (it drops only the Connection header).
            response.force_close()
        await response.prepare(request)
        try:
            await _relay(request, response, call, first)
            await response.write_eof()
        except (_ClientStalled, ConnectionResetError):
            # The connection is gone: dropped by _send, or closed by the client (a write can find it
            # closing before aiohttp cancels this handler). The call is cancelled below, logged 499.
            pass
        return response
    finally:
        call.cancel()


async def _relay(request: web.Request, response: web.StreamResponse, call: carried_calls.CarriedStream, message) -> None:
    """The stream's events from `message` (a serialized batch) on, then its error frame if the call
    fails, then [DONE]."""
    try:
        while message is not grpc.aio.EOF:
            batch = chat_pb2.ChatCompletionChunkBatch.FromString(message)
            events = [sse.event(message_to_json(chunk)) for chunk in batch.chunks]
            if batch.comments:
                events[:0] = map(sse.comment, batch.comments)
            await _send(request, response, b"".join(events))
            message = await call.read()
    except grpc.aio.AioRpcError as exc:
        _, body, _ = rpc_error_parts(exc)
        await _send(request, response, sse.event(body))
    await _send(request, response, sse.DONE)


FRAMING_ROOM = 1024  # _send: the chunked encoding's bytes around a write


async def _send(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    """A write to the client, which waits while the client reads nothing. The ChatService ends such
    a call after REQUEST_BODY_TIMEOUT_SECONDS (its own writes wait as long: ClientStalled, logged
    408), which frees the upstream call; after twice that this closes the connection too. A write
    can wait only if it fills the transport's buffer past its high-water mark (the protocol is paused
    then, and resumed below the low-water mark before the wait ends); the others, nearly all, go
    without a timer, which costs ~6 us."""
    transport = request.transport
    if transport is None or (transport.get_write_buffer_size() + len(data) + FRAMING_ROOM
                             <= transport.get_write_buffer_limits()[1]):
        await response.write(data)
        return
    try:
        async with asyncio.timeout(2 * request.app[BODY_TIMEOUT]):
            await response.write(data)
    except TimeoutError:
        transport.abort()
        raise _ClientStalled from None


class _ClientStalled(Exception):
    """_send closed the connection of a client that read nothing: the stream ends there."""


async def list_models(request: web.Request) -> web.Response:
    try:
        call = request.app[STUB].ListModels(chat_pb2.ListModelsRequest(), metadata=rpc_metadata(request))
        response = await hop.answer(call)
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    except AuthenticationFailed as exc:
        return error_response(exc)
    return json_response(
        {"object": "list", "data": [_model_json(m) for m in response.data]}
    )


async def get_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    try:
        call = request.app[STUB].GetModel(chat_pb2.GetModelRequest(id=model_id), metadata=rpc_metadata(request))
        model = await hop.answer(call)
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    except AuthenticationFailed as exc:
        return error_response(exc)
    return json_response(_model_json(model))


def _model_json(model: chat_pb2.Model) -> dict:
    # permission/root/parent: the earlier version's fields, kept for the clients that read them.
    return {"id": model.id, "object": model.object, "created": model.created, "owned_by": model.owned_by,
            "permission": [], "root": model.id, "parent": None}


def add_chat_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions, expect_handler=_expect_continue)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id:.+}", get_model)


