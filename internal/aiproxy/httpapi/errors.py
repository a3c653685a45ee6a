"""HTTP error answers, always in OpenAI's shape: from domain errors and from gRPC statuses."""

from __future__ import annotations

import re

import grpc
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from loguru import logger

from aiproxy.errors import GRPC_TO_HTTP, GatewayError, InternalError, error_type_for_http
from aiproxy.rpc.status import ERROR_TRAILER
from aiproxypb.v1 import common_pb2


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def json_response(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(exc: GatewayError) -> web.Response:
    return json_response(exc.to_body(), exc.http_status, exc.headers)


# Where aiohttp's HTTP parser messages start quoting the request's bytes (the llhttp ones after a blank line).
_QUOTED_BYTES = re.compile(r"\n\n| b'| b\"| bytearray\(")


def parser_reason(exc: HttpProcessingError) -> str:
    """What the parser refused, without the bytes it quotes (the client's, a key among them)."""
    if isinstance(exc, LineTooLong):
        return f"a line of the request head is longer than {exc.args[1]} bytes"
    reason = " ".join(_QUOTED_BYTES.split(exc.message, maxsplit=1)[0].split()).rstrip(":. ")
    return reason or "malformed request"


def detail_of(exc: grpc.aio.AioRpcError) -> common_pb2.ErrorDetail | None:
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_TRAILER:
            return common_pb2.ErrorDetail.FromString(value)
    return None


def rpc_error_parts(exc: grpc.aio.AioRpcError) -> tuple[int, dict, dict[str, str]]:
    """(HTTP status, OpenAI error body, headers) for a failed RPC."""
    detail = detail_of(exc)
    if detail is not None:
        body = error_body(
            detail.message,
            detail.type,
            detail.param if detail.HasField("param") else None,
            detail.code if detail.HasField("code") else None,
        )
        return detail.http_status or 500, body, dict(detail.headers)
    # No trailer: the status comes from gRPC itself (a broken hop, a limit such as a message or
    # metadata size), and its details are internals for the app log, not for the client.
    logger.warning("backend call failed without an error detail", grpc_code=exc.code().name, details=exc.details())
    code = exc.code()
    if code in _HOP_FAILURES:
        status, message = _HOP_FAILURES[code]
        return status, error_body(message, error_type_for_http(status), code=code.name.lower()), {}
    # Anything else is the gateway's own failure, whatever grpc-gateway's table would say: the
    # table's 429 for RESOURCE_EXHAUSTED (a size limit), 400 for INVALID_ARGUMENT or 401 would
    # blame the client or invite SDK retries for something no retry or fix on its side can cure.
    return 500, InternalError().to_body(), {}


# The no-detail statuses that describe the hop to the backend rather than a bug, kept at
# grpc-gateway's status: UNAVAILABLE (the backend is down or restarting, worth a retry) and
# DEADLINE_EXCEEDED (it did not answer in time).
_HOP_FAILURES = {
    grpc.StatusCode.UNAVAILABLE: (GRPC_TO_HTTP[grpc.StatusCode.UNAVAILABLE],
                                  "The gateway's backend is unavailable; retry shortly."),
    grpc.StatusCode.DEADLINE_EXCEEDED: (GRPC_TO_HTTP[grpc.StatusCode.DEADLINE_EXCEEDED],
                                        "The gateway's backend did not answer in time."),
}


def rpc_error_response(exc: grpc.aio.AioRpcError) -> web.Response:
    status, body, headers = rpc_error_parts(exc)
    return json_response(body, status, headers)
