"""Domain errors -> gRPC status with the OpenAI error as binary trailing metadata."""

from __future__ import annotations

import grpc

from aiproxy.errors import GatewayError
from aiproxypb.v1 import common_pb2

ERROR_TRAILER = "aiproxy-error-bin"
REQUEST_ID = "x-request-id"


def error_detail(exc: GatewayError) -> common_pb2.ErrorDetail:
    detail = common_pb2.ErrorDetail(message=exc.message, type=exc.error_type, http_status=exc.http_status)
    if exc.param is not None:
        detail.param = exc.param
    if exc.code is not None:
        detail.code = str(exc.code)
    detail.headers.update(exc.headers)
    return detail


def error_trailers(exc: GatewayError, request_id: str | None) -> tuple[tuple[str, str | bytes], ...]:
    trailers: list[tuple[str, str | bytes]] = [(ERROR_TRAILER, error_detail(exc).SerializeToString())]
    if request_id:
        trailers.append((REQUEST_ID, request_id))
    # Retry hints also as plain metadata, where gRPC clients expect them.
    trailers.extend((k, v) for k, v in exc.headers.items())
    return tuple(trailers)


async def abort_with(context: grpc.aio.ServicerContext, exc: GatewayError, request_id: str | None = None):
    await context.abort(exc.grpc_code, exc.message, trailing_metadata=error_trailers(exc, request_id))
