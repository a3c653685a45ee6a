"""The gRPC metadata every REST route sends with its call: the client's request id, the transport,
and its Authorization header, which the services' auth interceptor checks."""

from __future__ import annotations

from aiohttp import web

from aiproxy.auth import ensure_readable
from aiproxy.rpc.chat_service import TRANSPORT_KEY
from aiproxy.rpc.status import REQUEST_ID

REQUEST_ID_KEY = web.RequestKey("request_id", str)  # set by the errors middleware for every request


def rpc_metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The call's metadata; AuthenticationFailed for an Authorization value metadata cannot carry."""
    metadata = [(REQUEST_ID, request[REQUEST_ID_KEY]), (TRANSPORT_KEY, "http")]
    authorization = request.headers.get("Authorization")
    if authorization:
        ensure_readable(authorization)
        metadata.append(("authorization", authorization))
    return tuple(metadata)
