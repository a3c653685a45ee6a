"""The shared httpx client factory: one AsyncClient per provider, explicit timeouts and pool limits."""

from __future__ import annotations

import functools
import ssl
import zlib
from collections.abc import AsyncIterator, Callable

import httpx
import orjson

from aiproxy.config import ProviderSettings
from aiproxy.deadline import UpstreamDeadline
from aiproxy.errors import (
    GatewayError,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from aiproxy.providers.aiohttp_transport import ON_REQUEST_SENT, AiohttpTransport

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
    """httpx.AsyncClient with a direct path for the gateway's plain calls, and a cookie store
    that is a `_Cookies`.

    A provider's client has no auth flow, redirect following, event hooks or mounted transports,
    so httpx's send() layers for those (an auth generator, a redirect loop, a stream wrapper that
    times the body and ties it to the response in a reference cycle) only cost CPU: a provider
    call took 219-227 us of CPU with them and 186-210 us without (16 concurrent calls against the
    fake upstream, best of five rounds, three alternations). Such a request goes straight to the
    transport; anything else takes httpx's own path. What a caller sees is the same: timeouts,
    cookies, errors, the response and its body, and a closed response is freed by reference
    counting alone."""

    def build_request(self, method: str, url, *, content=None, headers=None, **options) -> httpx.Request:
        """httpx's request, built directly for a provider's call (an absolute URL, a body of
        bytes, no cookies, no other options): httpx's way copies and normalises the headers three
        times over, 25 us of CPU per call against 8. The result is the same request: the client's
        headers merged with `headers`, Host first, Content-Length last, the client's timeouts."""
        if (options or self.cookies or not isinstance(content, bytes) or not content
                or not isinstance(url, httpx.URL) or url.is_relative_url):
            return super().build_request(method, url, content=content, headers=headers, **options)
        merged = httpx.Headers([(b"Host", url.netloc), *self.headers.raw])
        if headers:
            merged.update(headers)
        merged["Content-Length"] = str(len(content))
        return httpx.Request(method, url, headers=merged, stream=httpx.ByteStream(content),
                             extensions={"timeout": self.timeout.as_dict()})

    def _is_plain(self, request: httpx.Request) -> bool:
        return (self._auth is None and not self.follow_redirects and not self._mounts
                and not self._event_hooks["request"] and not self._event_hooks["response"]
                and not request.url.userinfo)

    async def send(self, request: httpx.Request, *, stream: bool = False, auth=httpx.USE_CLIENT_DEFAULT,
                   follow_redirects=httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        if auth is not httpx.USE_CLIENT_DEFAULT or follow_redirects is not httpx.USE_CLIENT_DEFAULT \
                or not self._is_plain(request):
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        self._set_timeout(request)
        response = await self._transport.handle_async_request(request)
        response.request = request
        response.default_encoding = self._default_encoding
        self.cookies.extract_cookies(response)
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies) -> None:
        self._cookies = _Cookies(cookies)


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
    """A read timeout -> 504; no free connection in the provider's pool -> 503; everything else on the wire (refused, reset, DNS, and a connect timeout:
    no connection, so the request never left the gateway) -> 502."""
    if isinstance(exc, httpx.PoolTimeout):  # the gateway's own limit, not the upstream's fault
        return UpstreamBusy(f"The upstream provider '{provider}' is busy: {exc} (the provider's max_connections);"
                            " retry later.")
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamUnreachable(
            f"The upstream provider '{provider}' is unreachable: no connection opened within the connect timeout."
        )
    if isinstance(exc, httpx.TimeoutException):
        return upstream_timeout(provider)
    if isinstance(exc, httpx.ConnectError):  # the transport's words: refused, DNS, TLS certificate
        return UpstreamUnreachable(f"The upstream provider '{provider}' is unreachable: {exc}.")
    return UpstreamUnreachable(f"The upstream provider '{provider}' is unreachable: {type(exc).__name__}.")


def upstream_timeout(provider: str) -> UpstreamTimeout:
    return UpstreamTimeout(f"The upstream provider '{provider}' did not answer in time.")


def answer_deadline(client: httpx.AsyncClient) -> UpstreamDeadline:
    """The bound on an answer's progress: the client's read timeout, which alone bounds only each read."""
    return UpstreamDeadline(client.timeout.read)


# At most this much of an upstream's error body is read: its message is clipped to a few KiB on the
# way to the client anyway, and a huge (or endless) error body must neither fill the gateway's memory
# nor hold the call until the read timeout.
MAX_ERROR_BODY_BYTES = 1024 * 1024


async def _error_body(response: httpx.Response) -> bytes:
    body = b""
    try:
        async for chunk in decoded_body(response, MAX_ERROR_BODY_BYTES):
            body += chunk
            if len(body) >= MAX_ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass  # what came before the break is the message
    finally:
        await response.aclose()
    return body[:MAX_ERROR_BODY_BYTES]


def _zlib_decompressor(encoding: str, first: bytes):
    if encoding == "deflate" and first[:1] and (first[0] & 0x0F) != 8:
        return zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate without the zlib header, as httpx accepts
    return zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding != "deflate" else 0))


def decoded_body(response: httpx.Response, max_piece: int) -> AsyncIterator[bytes]:
    """The body with its Content-Encoding undone, as response.aiter_bytes() gives it, but no piece
    longer than `max_piece`: httpx inflates a whole network read at once, so a few hundred KiB of
    gzip (a "zip bomb", or a huge answer well compressed) became hundreds of MiB in memory before
    any size limit could look at it."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return response.aiter_bytes()  # identity (no layer added), or an encoding httpx decodes itself
    return _inflated(response, encoding, max_piece)


async def _inflated(response: httpx.Response, encoding: str, max_piece: int) -> AsyncIterator[bytes]:
    decompressor = None
    try:
        async for raw in response.aiter_raw():
            if decompressor is None:
                decompressor = _zlib_decompressor(encoding, raw)
            data = raw
            while data and not decompressor.eof:
                piece = decompressor.decompress(data, max_piece)
                data = decompressor.unconsumed_tail
                if piece:
                    yield piece
        if decompressor is not None and (rest := decompressor.flush()):
            yield rest
    except zlib.error as exc:
        raise httpx.DecodingError(str(exc), request=response.request) from None


async def _whole_body(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None once it is over `limit` bytes (read no further)."""
    chunks, size = [], 0
    async for chunk in decoded_body(response, limit + 1):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def send_checked(
    client: httpx.AsyncClient,
    request: httpx.Request,
    provider: str,
    error: Callable[[int, bytes, httpx.Headers], GatewayError],
    deadline: UpstreamDeadline,
) -> httpx.Response:
    """Send a request, its body left unread, and start `deadline` as it goes out. An error status
    is raised as `error(...)` with the first MAX_ERROR_BODY_BYTES of its body."""
    started = ON_REQUEST_SENT.set(deadline.sent)
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc) from None
    finally:
        ON_REQUEST_SENT.reset(started)
    if response.status_code >= 400:
        raise error(response.status_code, await _error_body(response), response.headers)
    if 300 <= response.status_code < 400:  # not followed: the operator's base_url is off (http for https, a moved path)
        await response.aclose()
        raise UpstreamBadResponse(f"The upstream provider '{provider}' answered HTTP {response.status_code}, a redirect"
                                  " the gateway does not follow: check the provider's base_url.")
    return response


async def fetch_object(
    client: httpx.AsyncClient,
    request: httpx.Request,
    provider: str,
    error: Callable[[int, bytes, httpx.Headers], GatewayError],
    source: str,
    limit: int,
) -> tuple[dict, httpx.Headers]:
    """Send a request and read its answer, which must be a JSON object: an error status is raised
    as send_checked raises it; an empty body, one over `limit` bytes (read no further), or one
    that is not a JSON object, is a 502 naming `source` (e.g. "The upstream provider 'x'"). The
    whole answer, head and body, must come within the read timeout of the request going out."""
    try:
        async with answer_deadline(client) as deadline:
            response = await send_checked(client, request, provider, error, deadline)
            try:
                content = await _whole_body(response, limit)
            except httpx.HTTPError as exc:
                raise transport_error(provider, exc) from None
            finally:
                await response.aclose()
    except TimeoutError:
        raise upstream_timeout(provider) from None
    if content is None:
        raise UpstreamBadResponse.too_large(source, limit)
    if not content.strip():
        raise UpstreamBadResponse(f"{source} returned an empty body.")
    return json_object(content, f"{source} returned a body"), response.headers


def json_object(data: bytes | str, what: str) -> dict:
    """`data` parsed, which must be a JSON object; anything else is a 502 saying `what` (e.g. "The
    Gemini API sent a stream event") is not one. Answers and stream events alike."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse(f"{what} that is not JSON.") from None
    if not isinstance(value, dict):
        raise UpstreamBadResponse(f"{what} that is not a JSON object.")
    return value


async def send_streaming(
    client: httpx.AsyncClient,
    request: httpx.Request,
    provider: str,
    error: Callable[[int, bytes, httpx.Headers], GatewayError],
    error_in_body: Callable[[bytes, httpx.Headers], GatewayError | None] | None = None,
) -> tuple[httpx.Response, UpstreamDeadline]:
    """Send a streaming request (send_checked). An error status is raised before anything is
    streamed, so the client still gets a proper HTTP status; so is a success that is not an event
    stream (an upstream ignoring `stream`, a proxy's HTML page), which would otherwise reach the
    client as an empty stream: as `error_in_body(...)` of its first MAX_ERROR_BODY_BYTES when that
    finds an error there (a 200 whose JSON body holds only an error), else as a bad response.
    Returns the response and the deadline of its first event (sse_batches keeps it up to date):
    the read timeout after the request went out."""
    try:
        async with answer_deadline(client) as deadline:
            response = await send_checked(client, request, provider, error, deadline)
            content_type = response.headers.get("content-type", "")
            if content_type.partition(";")[0].strip().lower() != "text/event-stream":
                found = error_in_body(await _error_body(response), response.headers) if error_in_body else None
                await response.aclose()
                if found is not None:
                    raise found
                raise UpstreamBadResponse(
                    f"The upstream provider '{provider}' answered a stream request with "
                    f"{content_type or 'no content type'}, not an event stream."
                )
    except TimeoutError:
        raise upstream_timeout(provider) from None
    return response, deadline
