"""Authentication, once, for every RPC: `authorization: Bearer <key>` metadata.

The interceptor wraps each method handler so the check runs inside the RPC's own task and
the authenticated caller and the request id are visible to the servicer through `CURRENT_CALLER`
and `CURRENT_REQUEST_ID`. LogService methods need an admin key; ListModels/GetModel are public
unless MODELS_REQUIRE_AUTH. Health and reflection are always public.

The wrapper is also every servicer's last line of defence: an unexpected exception is logged with
its traceback and answered INTERNAL with a generic message (and ErrorDetail), never with grpc.aio's
default details, which quote the exception to the client.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError
from loguru import logger

from aiproxy.auth import Caller, KeyRing
from aiproxy.errors import AuthenticationFailed, GatewayError, InternalError, InvalidRequest, PermissionDenied
from aiproxy.identity import request_id
from aiproxy.rpc.status import CURRENT_REQUEST_ID, REQUEST_ID, abort_with

CURRENT_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)

# CellHop (the cell's own unix socket only) carries calls that are each authenticated as their own.
_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/aiproxy.v1.CellHop/")
_MODEL_METHODS = ("/aiproxy.v1.ChatService/ListModels", "/aiproxy.v1.ChatService/GetModel")
_ADMIN_PREFIX = "/aiproxy.v1.LogService/"
_CHAT_PREFIX = "/aiproxy.v1.ChatService/"  # its chat calls send x-request-id themselves, with their headers


class Undecodable:
    """A request message that did not parse (corrupt wire format, bad UTF-8 in a string: a client built
    from a mismatched .proto). grpc.aio would answer it UNKNOWN, quoting the DecodeError, and log an
    ERROR; the wrapper answers INVALID_ARGUMENT instead, once the key is checked (401 first, as REST)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def error(self) -> InvalidRequest:
        return InvalidRequest(f"The request message could not be parsed: {self.reason}.", code="invalid_request_message")


def _lenient(deserializer):
    if deserializer is None:
        return None

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return deserialize


async def _decoded(requests):
    """A client-streamed request iterator that raises the error of a message that did not parse."""
    async for message in requests:
        if type(message) is Undecodable:
            raise message.error()
        yield message


def metadata_value(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value
    return None


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Serves each method through `wrap(method, handler)` of the server's own handler, built on its first
    call and kept. An instance belongs to one server: the cell's two do not serve the same methods
    (CellHop is the internal one's, reflection the public one's), and a cache shared between them
    served each the other's."""

    def __init__(self, wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]) -> None:
        self._wrap_method = wrap
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # unknown method: not cached, so random names cannot grow the cache
                return None
            wrapped = self._wrapped[method] = self._wrap_method(method, handler)
        return wrapped


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, keys: KeyRing, models_require_auth: bool, on_reject=None) -> None:
        """on_reject(method, context, error, caller) is told of every refused call (for the request log);
        `caller` is None unless the key was accepted (the message was refused)."""
        super().__init__(self._wrap)
        self._keys = keys
        self._models_require_auth = models_require_auth
        self._on_reject = on_reject

    def _policy(self, method: str) -> str:
        if method.startswith(_PUBLIC_PREFIXES):
            return "public"
        if method in _MODEL_METHODS and not self._models_require_auth:
            return "optional"
        return "admin" if method.startswith(_ADMIN_PREFIX) else "client"

    def _authenticate(self, policy: str, context) -> Caller | None:
        header = metadata_value(context, "authorization")
        if policy == "optional" and not header:
            return None
        caller = self._keys.authenticate(header)
        if policy == "admin" and not caller.admin:
            raise PermissionDenied("This API reads everyone's request logs: it needs an admin key (ADMIN_API_KEYS).")
        return caller

    def _wrap(self, method: str, handler):
        """The method's handler with authentication in front, built once per method."""
        policy = self._policy(method)
        if policy == "public":
            return handler
        authenticate, on_reject = self._authenticate, self._on_reject
        # Every other answer carries its request id too, as every REST response does.
        tags_answer = not method.startswith(_CHAT_PREFIX) or method in _MODEL_METHODS

        async def admit(request, context) -> bool:
            rid = request_id(metadata_value(context, REQUEST_ID))
            CURRENT_REQUEST_ID.set(rid)
            undecodable = type(request) is Undecodable
            caller = None
            try:
                caller = authenticate(policy, context)
                CURRENT_CALLER.set(caller)
                if undecodable:
                    raise request.error()
                if tags_answer:
                    context.set_trailing_metadata(((REQUEST_ID, rid),))
                return True
            except (AuthenticationFailed, PermissionDenied, InvalidRequest) as exc:
                if on_reject is not None:
                    on_reject(method, context, exc, caller)
                await abort_with(context, exc, CURRENT_REQUEST_ID.get())
                return False

        async def fail(context, exc: Exception) -> None:
            if isinstance(exc, grpc.aio.AbortError):  # the servicer aborted on purpose (GatewayError)
                raise exc
            rid = CURRENT_REQUEST_ID.get()
            if not isinstance(exc, GatewayError):  # one is raised where no servicer catches it (_decoded)
                logger.opt(exception=exc).error("unhandled error in RPC", method=method, request_id=rid)
                exc = InternalError()
            await abort_with(context, exc, rid)

        def unary_response(inner, unary_request: bool):
            async def behavior(request, context):
                if await admit(request if unary_request else None, context):
                    try:
                        return await inner(request if unary_request else _decoded(request), context)
                    except Exception as exc:  # not CancelledError: a cancelled call is no error
                        await fail(context, exc)

            return behavior

        def streamed_response(inner, unary_request: bool):
            async def behavior(request, context):
                if not await admit(request if unary_request else None, context):
                    return
                try:
                    result = inner(request if unary_request else _decoded(request), context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:  # a servicer may also write with context.write() and return
                        await result
                except Exception as exc:
                    await fail(context, exc)

            return behavior

        kinds = (
            ("unary_unary", unary_response, True, grpc.unary_unary_rpc_method_handler),
            ("unary_stream", streamed_response, True, grpc.unary_stream_rpc_method_handler),
            ("stream_unary", unary_response, False, grpc.stream_unary_rpc_method_handler),
            ("stream_stream", streamed_response, False, grpc.stream_stream_rpc_method_handler),
        )
        for attribute, guard, unary_request, build in kinds:
            inner = getattr(handler, attribute)
            if inner:
                return build(guard(inner, unary_request), _lenient(handler.request_deserializer),
                             handler.response_serializer)
        return handler
