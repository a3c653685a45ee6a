"""REST routes of the LogService (GET /v1/logs/...): query string -> proto, one RPC, proto ->
JSON. The caller's Authorization header and request id travel as metadata (`rpc_metadata`); the
LogService decides. `*_json` fields (JSON text in proto) come back as JSON values under the base name.
Partitions a call left out (its reply's `warnings`) are listed once in the body's `warnings`, whatever the pages."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from aiohttp import web
from loguru import logger

from aiproxy.errors import GatewayError, InvalidRequest
from aiproxy.httpapi import hop
from aiproxy.httpapi.errors import detail_of, error_response, json_response, rpc_error_response
from aiproxy.httpapi.metadata import rpc_metadata
from aiproxy.logstore.protomap import INT32_MAX, message_to_json
from aiproxy.logstore.search import MAX_LIMIT
from aiproxypb.v1 import logs_pb2

_FILTERS = ("since", "to", "model", "provider", "api_key_hash", "dialog_id", "status_code")


def _known(query, *names: str) -> None:
    """A misspelt parameter (`status=500`) would silently widen the answer: refuse it instead."""
    unknown = sorted(set(query) - set(names))
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}; this endpoint takes {', '.join(names)}",
                             param=unknown[0])


def _filter(query) -> logs_pb2.LogFilter:
    message = logs_pb2.LogFilter(
        since=query.get("since", ""),
        to=query.get("to", ""),
        model=query.get("model", ""),
        provider=query.get("provider", ""),
        api_key_hash=query.get("api_key_hash", ""),
        dialog_id=query.get("dialog_id", ""),
    )
    if query.get("status_code"):
        message.status_code = _int(query, "status_code")
    return message




def _int(query, name: str, maximum: int = INT32_MAX, accepted: str = "") -> int:
    """A non-negative integer parameter, 0 when absent; `accepted` describes the range in the error."""
    raw = query.get(name)
    if raw in (None, ""):
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter {name}={raw!r} is not an integer" + (accepted and f": use {accepted}"),
                             param=name) from None
    if not 0 <= value <= maximum:
        raise InvalidRequest(f"query parameter {name}={raw} is out of range: use {accepted or f'0 to {maximum}'}",
                             param=name)
    return value


def _limit(query) -> int:
    """A negative page size was told to "use 0 to 2147483647", and then 501 was refused as above 500.
    Up to INT32_MAX it goes on to the LogService, whose `invalid_query` names the limit (docs/logstore.md)."""
    return _int(query, "limit", accepted=f"1 to {MAX_LIMIT} (0 or none: the default)")


def _rpc_error(exc: grpc.aio.AioRpcError) -> web.Response:
    """The LogService's own errors carry their OpenAI body. A size limit hit on the way (a reply
    larger than a gRPC message may be, before the service could say so) would otherwise be a bare
    "internal error": say what happened and what to do instead."""
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and detail_of(exc) is None:
        logger.warning("log service answer over a gRPC size limit", details=exc.details())
        return error_response(GatewayError(
            "The log service's answer is larger than one gRPC message between the gateway's facade and its "
            "backend may be (MAX_BODY_BYTES + 1 MiB). Read dialogs in pages (limit, cursor), or read the "
            "record on the gateway's host with `logdb show`.",
            code="response_too_large",
        ))
    return rpc_error_response(exc)


def add_log_routes(app: web.Application, stub_factory: Callable) -> None:
    """GET /v1/logs/requests[?q=…], /v1/logs/requests/{id}, /v1/logs/dialogs[/{id}], /v1/logs/stats."""

    def handler(build: Callable[[web.Request], tuple[str, object, str | None]]):
        """`build` gives the method, its request and, for a paged method whose pages the answer
        should hold whole, the field that each page adds to (the answer is every page's)."""

        async def handle(request: web.Request) -> web.Response:
            try:
                metadata = rpc_metadata(request)
                method, message, follow = build(request)
            except GatewayError as exc:  # an unreadable key (401, first) or a bad query (400)
                return error_response(exc)
            rpc = getattr(stub_factory(), method)
            warnings: list[str] = []

            async def call() -> dict:
                reply = message_to_json(await hop.answer(rpc(message, metadata=metadata)))
                warnings.extend(w for w in reply.pop("warnings", ()) if w not in warnings)  # once, whatever the pages
                return reply

            try:
                answer = await call()
                while follow and answer["next_cursor"]:
                    message.cursor = answer["next_cursor"]
                    page = await call()
                    answer[follow] += page[follow]
                    answer["next_cursor"] = page["next_cursor"]
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
            if warnings:
                answer["warnings"] = warnings
            return json_response(answer)

        return handle

    def search(request: web.Request):
        q = request.query
        _known(q, "q", *_FILTERS, "limit", "cursor")
        return "SearchRequests", logs_pb2.SearchRequestsRequest(
            q=q.get("q", ""), filter=_filter(q), limit=_limit(q), cursor=q.get("cursor", "")
        ), None

    def get_request(request: web.Request):
        return "GetRequest", logs_pb2.GetRequestRequest(request_id=request.match_info["request_id"]), None

    def list_dialogs(request: web.Request):
        q = request.query
        _known(q, *_FILTERS, "limit", "cursor")
        message = logs_pb2.ListDialogsRequest(filter=_filter(q), limit=_limit(q), cursor=q.get("cursor", ""))
        return "ListDialogs", message, None

    def get_dialog(request: web.Request):
        """Every turn, as before paging (the facade follows the pages), unless the client pages
        itself with `limit` or `cursor`: then one page and its next_cursor."""
        q = request.query
        _known(q, "limit", "cursor")
        message = logs_pb2.GetDialogRequest(
            dialog_id=request.match_info["dialog_id"], limit=_limit(q), cursor=q.get("cursor", "")
        )
        return "GetDialog", message, None if "limit" in q or "cursor" in q else "turns"

    def stats(request: web.Request):
        _known(request.query, "since", "to")
        return "Stats", logs_pb2.StatsRequest(since=request.query.get("since", ""), to=request.query.get("to", "")), None

    app.router.add_get("/v1/logs/requests", handler(search))
    # Request ids may come from clients (X-Request-ID) and hold a "/": the id is the rest of the path.
    app.router.add_get("/v1/logs/requests/{request_id:.+}", handler(get_request))
    app.router.add_get("/v1/logs/dialogs", handler(list_dialogs))
    app.router.add_get("/v1/logs/dialogs/{dialog_id}", handler(get_dialog))
    app.router.add_get("/v1/logs/stats", handler(stats))
