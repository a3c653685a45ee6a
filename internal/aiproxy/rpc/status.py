"""Domain errors -> gRPC status with the OpenAI error as binary trailing metadata."""

from __future__ import annotations

import asyncio
import contextvars

import grpc

from aiproxy.errors import GatewayError, clip
from aiproxypb.v1 import common_pb2

ERROR_TRAILER = "aiproxy-error-bin"
REQUEST_ID = "x-request-id"
# The id of the RPC running in this task, set by the auth interceptor before any servicer runs.
CURRENT_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


# gRPC clients drop a call whose metadata exceeds 16 KiB (grpc.absolute_max_metadata_size) and may
# drop it above 8 KiB (the soft limit), reporting RESOURCE_EXHAUSTED instead of the error. The message
# travels twice, base64 in the ErrorDetail and percent-encoded (up to 3 bytes a byte) as grpc-message,
# so each copy is capped to keep all trailers together under 8 KiB whatever the message holds.
MAX_DETAIL_MESSAGE_BYTES = 2048
MAX_STATUS_MESSAGE_BYTES = 1024
MAX_FIELD_BYTES = 256  # param, code, and each retry/rate-limit hint (a longer upstream hint is dropped)


def _hints(exc: GatewayError) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if len(k) + len(v) <= MAX_FIELD_BYTES}


def error_detail(exc: GatewayError) -> common_pb2.ErrorDetail:
    detail = common_pb2.ErrorDetail(
        message=clip(exc.message, MAX_DETAIL_MESSAGE_BYTES), type=exc.error_type, http_status=exc.http_status
    )
    if exc.param is not None:
        detail.param = clip(exc.param, MAX_FIELD_BYTES)
    if exc.code is not None:
        detail.code = clip(str(exc.code), MAX_FIELD_BYTES)
    detail.headers.update(_hints(exc))
    return detail


def error_trailers(exc: GatewayError, request_id: str | None) -> tuple[tuple[str, str | bytes], ...]:
    trailers: list[tuple[str, str | bytes]] = [(ERROR_TRAILER, error_detail(exc).SerializeToString())]
    if request_id:
        trailers.append((REQUEST_ID, request_id))
    # Retry hints also as plain metadata, where gRPC clients expect them.
    trailers.extend(_hints(exc).items())
    return tuple(trailers)


async def abort_with(context: grpc.aio.ServicerContext, exc: GatewayError, request_id: str | None = None):
    """End the call with exc's status and trailers. Trailers given here replace those set before (the
    interceptor's x-request-id), so the id goes with them: the call's own unless one is given."""
    if request_id is None:
        request_id = CURRENT_REQUEST_ID.get()
    try:
        await context.abort(
            exc.grpc_code, clip(exc.message, MAX_STATUS_MESSAGE_BYTES), trailing_metadata=error_trailers(exc, request_id)
        )
    except grpc.aio.InternalError:
        # A stream whose client stopped reading still has a message queued, and gRPC takes no status
        # behind it (its batch fails): the call can only end cancelled, without grpc.aio's ERROR and
        # traceback.
        raise asyncio.CancelledError(exc.message) from None
