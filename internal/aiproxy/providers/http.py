"""The shared httpx client factory: one AsyncClient per provider, explicit timeouts and pool limits."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable

import httpx

from aiproxy.config import ProviderSettings
from aiproxy.errors import GatewayError, UpstreamTimeout, UpstreamUnreachable
from aiproxy.providers.aiohttp_transport import AiohttpTransport

_SET_COOKIE_HEADERS = (b"set-cookie", b"set-cookie2")


class _Cookies(httpx.Cookies):
    """httpx.Cookies that hands a response to the urllib cookie machinery only when it sets a
    cookie: httpx calls extract_cookies on every response, which costs ~30 us even when there is
    nothing to store. What is stored and sent back is unchanged."""

    def extract_cookies(self, response: httpx.Response) -> None:
        for name, _ in response.headers.raw:
            if name.lower() in _SET_COOKIE_HEADERS:
                super().extract_cookies(response)
                return


class _AsyncClient(httpx.AsyncClient):
    """httpx.AsyncClient whose cookie store is a `_Cookies`, and whose read responses are freed
    by reference counting: httpx binds `response.stream` to the response (a reference cycle that
    also holds the request, both header sets and the transport's response), so each call left
    ~30 objects for the cyclic garbage collector, ~2% of the gateway's CPU."""

    async def send(self, request: httpx.Request, **kwargs) -> httpx.Response:
        response = await super().send(request, **kwargs)
        if response.is_closed and response.is_stream_consumed:
            # Read and closed (stream=False): the body is in response.content, the stream is spent.
            response.stream = httpx.ByteStream(response.content)
        elif not response.is_closed:
            response.stream = _UnbindOnClose(response.stream, response)
        return response

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies) -> None:
        self._cookies = _Cookies(cookies)


class _UnbindOnClose(httpx.AsyncByteStream):
    """A streamed response's body that, once closed, detaches httpx's stream from the response
    (httpx never reads the stream of a closed response again), breaking the same cycle."""

    def __init__(self, stream: httpx.AsyncByteStream, response: httpx.Response) -> None:
        self._stream = stream
        self._response: httpx.Response | None = response

    async def __aiter__(self):
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._response is not None:
                self._response.stream = httpx.ByteStream(b"")
                self._response = None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One CA bundle load for every provider (each load costs tens of milliseconds)."""
    return ssl.create_default_context()


def make_http_client(settings: ProviderSettings, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    transport = AiohttpTransport(max_connections=settings.max_connections, ssl_context=_tls_context())
    client = _AsyncClient(
        base_url=settings.base_url,
        headers=headers or {},
        timeout=timeout,
        transport=transport,
        # Upstreams are configured by the operator; never pick up proxies from the environment.
        trust_env=False,
    )
    client.cookies = client.cookies  # through the setter above: a `_Cookies`
    return client


def transport_error(provider: str, exc: httpx.HTTPError) -> GatewayError:
    """Timeouts -> 504, everything else on the wire (refused, reset, DNS) -> 502."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"The upstream provider '{provider}' did not answer in time.")
    return UpstreamUnreachable(f"The upstream provider '{provider}' is unreachable: {type(exc).__name__}.")


async def send_streaming(
    client: httpx.AsyncClient,
    request: httpx.Request,
    provider: str,
    error: Callable[[int, bytes, httpx.Headers], GatewayError],
) -> httpx.Response:
    """Send a streaming request. An error status is read whole and raised as `error(...)` before
    anything is streamed, so the client still gets a proper HTTP status."""
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc) from None
    if response.status_code >= 400:
        try:
            body = await response.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        raise error(response.status_code, body, response.headers)
    return response
