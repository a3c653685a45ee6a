"""An httpx transport over aiohttp's client: providers keep httpx's API (one AsyncClient per
provider, its timeouts and errors), while the bytes go through aiohttp's connection pool and C
HTTP parser. Measured on the gateway's hot path it costs about a fifth of httpcore's CPU per call
(docs/benchmarks.md), and aiohttp is already a dependency of the facade."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar

import aiohttp
import httpx

from aiproxy.errors import OutOfFileDescriptors

# What the calling task wants called once its request has a connection, the moment aiohttp sends
# it: a deadline on the whole answer counts from there, not from a wait for a free connection or a
# connect (those are bounded by the connect timeout, and fail as 503 or 502, not as a 504).
ON_REQUEST_SENT: ContextVar[Callable[[], None] | None] = ContextVar("on_request_sent", default=None)


class _Connector(aiohttp.TCPConnector):
    async def connect(self, req, traces, timeout):  # noqa: ASYNC109 - aiohttp calls it so
        connection = await super().connect(req, traces, timeout)
        if (sent := ON_REQUEST_SENT.get()) is not None:
            sent()
        return connection


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    limits = request.extensions.get("timeout") or {}
    return aiohttp.ClientTimeout(
        total=None, connect=limits.get("pool"), sock_connect=limits.get("connect"), sock_read=limits.get("read")
    )


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """Why no connection was made, in words an operator can act on and without the host and port
    aiohttp puts in its message: this reaches clients and the request log."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or type(exc.certificate_error).__name__
        return f"its TLS certificate was not accepted ({reason})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"its host name did not resolve ({exc.os_error.strerror})"
    errno = exc.os_error.errno  # the strerror of a refused connect names the address: rebuilt from errno
    return os.strerror(errno).lower() if isinstance(errno, int) and errno > 0 else type(exc.os_error).__name__


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """aiohttp's exceptions as the httpx exceptions the providers handle."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, asyncio.TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(_connect_failure(exc), request=request)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            async for chunk in content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            # aiohttp raises a broken connection's error before handing out the bytes that came
            # with it; deliver those first, as httpx would (a cut stream keeps its partial answer).
            leftover = b"".join(getattr(content, "_buffer", ()))
            if leftover:
                yield leftover
            raise _httpx_error(exc, self._request) from None

    async def aclose(self) -> None:
        # Back to the pool when the body was read to the end; otherwise the connection is closed,
        # which is how an abandoned call is cancelled upstream.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int, keepalive_seconds: float = 15.0, ssl_context: ssl.SSLContext) -> None:
        self._limit = max_connections
        self._keepalive = keepalive_seconds
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that serves the requests.
        if self._session is None or self._session.closed:
            connector = _Connector(limit=self._limit, keepalive_timeout=self._keepalive, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies must never be shared across clients
                auto_decompress=False,  # httpx decodes Content-Encoding itself
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_for_loop()
        body = await request.aread()  # at once when the body is known (always, for the providers' requests)
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                timeout=_timeout(request),
                allow_redirects=False,
                skip_auto_headers=("Content-Type",),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError) and self._pool_full(session.connector):
                raise httpx.PoolTimeout(self._pool_busy(request), request=request) from None
            if isinstance(exc, aiohttp.ClientConnectorError) and OutOfFileDescriptors.caused(exc.os_error):
                raise OutOfFileDescriptors() from None
            raise _httpx_error(exc, request) from None
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _pool_full(self, connector: aiohttp.BaseConnector | None) -> bool:
        """Whether every connection is taken by other calls. aiohttp's `connect` timeout covers both
        the wait for a free connection and the connect itself and raises the same error for either;
        this call's own connection, if it was opening one, is already given back here, so a full pool
        means it waited in the queue (aiohttp has no public count of the connections in use)."""
        return connector is not None and len(getattr(connector, "_acquired", ())) >= self._limit

    def _pool_busy(self, request: httpx.Request) -> str:
        waited = (request.extensions.get("timeout") or {}).get("pool")
        return f"all {self._limit} of its connections are in use and none came free within {waited} s"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
