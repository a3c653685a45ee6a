"""The aiohttp application: request ids, CORS, HSTS, OpenAI-shaped errors, routes."""

from __future__ import annotations

import asyncio

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loguru import logger

from aiproxy import __version__
from aiproxy.config import Settings
from aiproxy.errors import InternalError
from aiproxy.httpapi.carried_calls import CarriedCalls
from aiproxy.httpapi.chat_routes import BODY_TIMEOUT, CALLS, ENDING, REJECT, STUB, add_chat_routes
from aiproxy.httpapi.errors import error_body, error_response, json_response
from aiproxy.httpapi.logs_routes import add_log_routes
from aiproxy.httpapi.metadata import REQUEST_ID_KEY
from aiproxy.identity import request_id
from aiproxypb.v1 import chat_pb2_grpc, logs_pb2_grpc

CHANNEL = web.AppKey("grpc_channel", grpc.aio.Channel)
# What a browser client may read: the request id and the upstream headers the gateway forwards
# (providers.base.FORWARDED_HEADERS and the x-ratelimit- names OpenAI and OpenRouter send).
EXPOSED_HEADERS = "X-Request-ID, Retry-After, Retry-After-Ms, X-Should-Retry, X-RateLimit-Limit-Requests, " \
                  "X-RateLimit-Remaining-Requests, X-RateLimit-Reset-Requests, X-RateLimit-Limit-Tokens, " \
                  "X-RateLimit-Remaining-Tokens, X-RateLimit-Reset-Tokens, X-RateLimit-Limit, " \
                  "X-RateLimit-Remaining, X-RateLimit-Reset"

REQUEST_LINE_LIMIT = 64 * 1024
SERVER_NAME = "aiproxy"  # the Server header: not aiohttp's "Python/x.y aiohttp/x.y.z", no versions to fingerprint


def _request_id(request: web.Request) -> str:
    return request_id(request.headers.get("X-Request-ID"))


def http_error_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own HTTP error (no route, a method the route does not take, an expectation it
    cannot meet) in OpenAI's format; an HTTPException that is no error (a redirect) is raised on,
    for aiohttp to send."""
    if exc.status < 400:
        raise exc
    code = {404: "not_found", 405: "method_not_allowed", 417: "expectation_failed"}.get(exc.status)
    message = {
        404: f"This gateway does not serve {request.path}: it serves OpenAI's chat completions "
             "(/v1/chat/completions) and models (/v1/models), and request logs (/v1/logs/...) to admin keys."
        if request.path.startswith("/v1/")
        else f"Unknown path {request.path}. This gateway serves the OpenAI API under /v1.",
        405: f"Method {request.method} is not allowed on {request.path}.",
        417: "The only Expect header this gateway meets is `Expect: 100-continue`.",
    }.get(exc.status, exc.reason)
    # A 405 must say which methods the path takes (RFC 9110 §15.5.6); aiohttp's exception has it.
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return json_response(error_body(message, "invalid_request_error", code=code), exc.status, headers)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    request[REQUEST_ID_KEY] = _request_id(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return http_error_response(request, exc)
    except Exception:
        logger.exception("unhandled error in HTTP handler", request_id=request[REQUEST_ID_KEY])
        return error_response(InternalError())


def _cors_origins(origins: tuple[str, ...]):
    """The Access-Control-Allow-Origin for a request's Origin header, or None. `*` is sent whether or
    not the request has an Origin: the Fetch standard's "CORS protocol and HTTP caches" asks a static
    value on every answer, so that a cache that kept a non-CORS answer serves a browser one it may read."""
    allow_any = "*" in origins

    def allowed(origin: str | None) -> str | None:
        if allow_any:
            return "*"
        return origin if origin in origins else None

    return allowed


def _vary_on_origin(headers) -> None:
    """Add Origin to Vary (keeping what it names already): with listed origins every answer depends on
    the request's Origin, also one without Access-Control-Allow-Origin, which a cache must not give
    to a listed origin (Fetch standard, "CORS protocol and HTTP caches")."""
    vary = headers.get("Vary")
    if not vary:
        headers["Vary"] = "Origin"
    elif "origin" not in {name.strip().lower() for name in vary.split(",")}:
        headers["Vary"] = f"{vary}, Origin"


def _cors_middleware(origins: tuple[str, ...]):
    """Preflights. The headers of every other response are set by on_prepare, which also sees the
    answers given before the middlewares run (a refused `Expect`)."""
    allowed = _cors_origins(origins)

    @web.middleware
    async def cors(request: web.Request, handler):
        if request.method != "OPTIONS":
            return await handler(request)
        origin = request.headers.get("Origin")
        allow = allowed(origin)
        if allow is None:
            if origin and "Access-Control-Request-Method" in request.headers:
                # A preflight from an origin not listed: refused as such (aiohttp-cors: 403; Starlette:
                # 400), not with the route's 405, which would send its reader looking for a missing method.
                return json_response(error_body(
                    f"Origin {origin} is not allowed to call this gateway from a browser (CORS_ALLOW_ORIGINS).",
                    "invalid_request_error", code="cors_origin_not_allowed"), 403)
            return await handler(request)
        return web.Response(
            status=200 if not origin else 204,
            headers={
                "Access-Control-Allow-Origin": allow,
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Content-Type, Authorization"
                ),
                "Access-Control-Max-Age": "86400",
            },
        )

    return cors


def _make_on_prepare(settings: Settings):
    # No includeSubDomains: the gateway often lives on one subdomain and must not pin its siblings.
    hsts = f"max-age={settings.tls.hsts_max_age}" if settings.tls.enabled else None
    origins = settings.cors_allow_origins
    cors_origin = _cors_origins(origins) if origins else None
    vary_on_origin = bool(origins) and "*" not in origins

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER_NAME
        response.headers["X-Request-ID"] = request.get(REQUEST_ID_KEY) or _request_id(request)
        origin = cors_origin(request.headers.get("Origin")) if cors_origin else None
        if origin and "Access-Control-Allow-Origin" not in response.headers:  # a preflight has its own
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if vary_on_origin:
            _vary_on_origin(response.headers)
        if hsts:
            response.headers["Strict-Transport-Security"] = hsts

    return on_prepare


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


async def ready(request: web.Request) -> web.Response:
    stub = health_pb2_grpc.HealthStub(request.app[CHANNEL])
    try:
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    except grpc.aio.AioRpcError as exc:
        return json_response({"status": "unavailable", "detail": exc.code().name}, 503)
    serving = answer.status == health_pb2.HealthCheckResponse.SERVING
    return json_response({"status": "ready" if serving else "not_serving"}, 200 if serving else 503)


def create_app(settings: Settings, channel: grpc.aio.Channel, reject) -> web.Application:
    middlewares = [errors_middleware]
    if settings.cors_allow_origins:
        middlewares.append(_cors_middleware(settings.cors_allow_origins))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.max_body_bytes,
        # Request lines up to 64 KiB (aiohttp: 8 KiB): a long /v1/logs search query must reach the
        # handler, which can say what to do instead (httpapi.protocol answers what the parser refuses).
        handler_args={"max_line_size": REQUEST_LINE_LIMIT},
    )
    app[CHANNEL] = channel
    app[STUB] = chat_pb2_grpc.ChatServiceStub(channel)
    app[CALLS] = calls = CarriedCalls(channel)
    app.on_cleanup.append(lambda _: calls.close())  # after the handlers: the stream ends with them
    app[REJECT] = reject
    app[BODY_TIMEOUT] = settings.request_body_timeout_seconds
    app[ENDING] = asyncio.Event()
    app.on_response_prepare.append(_make_on_prepare(settings))
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    add_chat_routes(app)
    add_log_routes(app, lambda: logs_pb2_grpc.LogServiceStub(channel))
    return app
