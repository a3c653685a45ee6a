"""The provider httpx client (aiproxy.providers.http) against a real local server: cookies an
upstream sets are kept and sent back exactly as plain httpx does, though responses without
Set-Cookie skip httpx's cookie parsing; a read response is freed by reference counting; what the
direct send path skips (auth, redirects, event hooks) still works when a client uses it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import http.cookiejar
import weakref

import pytest
from aiohttp import web

from aiproxy.config import ProviderSettings
from aiproxy.providers.http import make_http_client


@contextlib.asynccontextmanager
async def _serving(app: web.Application):
    """The app on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


def _client(base_url: str):
    return make_http_client(ProviderSettings(name="t", kind="openai", base_url=base_url))


async def _exchange() -> list[str | None]:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({"ok": True})
        if request.query.get("set"):
            response.set_cookie("session", request.query["set"])
        return response

    app = web.Application()
    app.router.add_get("/x", handler)
    async with _serving(app) as base_url, _client(base_url) as client:
        response = await client.get("/x")  # no cookie yet, none set
        assert response.json() == {"ok": True}
        streamed = await client.send(client.build_request("GET", "/x"), stream=True)
        assert [chunk async for chunk in streamed.aiter_bytes()] == [b'{"ok": true}']
        await streamed.aclose()
        alive = [weakref.ref(response), weakref.ref(streamed)]
        gc.disable()
        try:
            del response, streamed
            assert [ref() for ref in alive] == [None, None], "closed responses should be freed without the cyclic GC"
        finally:
            gc.enable()
        await client.get("/x")
        await client.get("/x", params={"set": "abc"})  # sets one
        await client.get("/x")  # sends it back
        await client.get("/x", params={"set": "def"})  # replaces it
        await client.get("/x")
        assert client.cookies.get("session") == "def"
    return seen


def test_upstream_cookies_behave_as_in_plain_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = []
    extract = http.cookiejar.CookieJar.extract_cookies

    def counting_extract(jar, response, request):
        parsed.append(request.get_full_url())
        return extract(jar, response, request)

    monkeypatch.setattr(http.cookiejar.CookieJar, "extract_cookies", counting_extract)
    assert asyncio.run(_exchange()) == [None, None, None, None, "session=abc", "session=abc", "session=def"]
    # Only the two responses that set a cookie went through the cookie parser.
    assert [url.rsplit("?", 1)[-1] for url in parsed] == ["set=abc", "set=def"]


async def _with_httpx_features() -> dict:
    seen: dict = {}

    async def target(request: web.Request) -> web.Response:
        seen["authorization"] = request.headers.get("Authorization")
        return web.json_response({"ok": True})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/target")

    app = web.Application()
    app.router.add_get("/target", target)
    app.router.add_get("/moved", moved)
    async with _serving(app) as base_url, _client(base_url) as client:
        hooked = []

        async def on_response(response) -> None:
            hooked.append(response.status_code)

        seen["plain redirect"] = (await client.get("/moved")).status_code  # not followed by default
        client.auth = ("user", "secret")
        client.event_hooks = {"response": [on_response]}
        response = await client.get("/moved", follow_redirects=True)
        seen["followed"] = (response.status_code, response.json(), [r.status_code for r in response.history])
        seen["hooked"] = hooked
    return seen


def test_auth_redirects_and_event_hooks_still_take_httpx_path() -> None:
    seen = asyncio.run(_with_httpx_features())
    assert seen["plain redirect"] == 302
    assert seen["followed"] == (200, {"ok": True}, [302])
    assert seen["authorization"] == "Basic dXNlcjpzZWNyZXQ="
    assert seen["hooked"] == [302, 200]


async def _gzipped() -> tuple:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"ok": true}'),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/z", handler)
    async with _serving(app) as base_url, _client(base_url) as client:
        whole = (await client.get("/z")).json()
        streamed = await client.send(client.build_request("GET", "/z"), stream=True)
        pieces = b"".join([chunk async for chunk in streamed.aiter_bytes()])
        await streamed.aclose()
    return whole, pieces


def test_a_gzipped_upstream_body_is_decoded_read_whole_or_streamed() -> None:
    assert asyncio.run(_gzipped()) == ({"ok": True}, b'{"ok": true}')


@pytest.mark.parametrize("extra", [None, {"accept": "text/event-stream"}, {"X-Extra": "1", "authorization": "k"}])
@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9/v1", "https://api.example.com:8443/api/v1"])
def test_a_provider_request_is_built_as_httpx_builds_it(base_url: str, extra: dict | None) -> None:
    import httpx

    client = make_http_client(ProviderSettings(name="t", kind="openai", base_url=base_url, read_timeout=7.0),
                              {"content-type": "application/json", "authorization": "Bearer sk-x"})
    url = client.build_request("POST", "/chat/completions").url
    body = b'{"model": "m", "messages": []}'
    direct = client.build_request("POST", url, content=body, headers=extra)
    reference = httpx.AsyncClient.build_request(client, "POST", url, content=body, headers=extra)
    for request in (direct, reference):
        assert request.read() == body
    assert (direct.method, direct.url, direct.headers.raw, direct.extensions) == \
        (reference.method, reference.url, reference.headers.raw, reference.extensions)
    client.cookies.set("session", "abc")  # cookies (and anything else a provider never sends) take httpx's own way
    with_cookie = client.build_request("POST", url, content=body)
    assert with_cookie.headers["cookie"] == "session=abc"


@contextlib.contextmanager
def _blackholed_port():
    """A port whose listen backlog is full: the kernel drops further SYNs, so a connect hangs, as it
    does to a firewalled host."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in (*fillers, server):
            sock.close()


async def _call_upstream(base_url: str):
    """The GatewayError a chat call to an OpenAI-compatible upstream at base_url fails with."""
    from aiproxy.errors import GatewayError
    from aiproxy.providers.base import UpstreamRequest
    from aiproxy.providers.openai_compat import OpenAICompatibleProvider

    provider = OpenAICompatibleProvider(ProviderSettings(
        name="t", kind="openai", base_url=base_url, connect_timeout=0.3, read_timeout=30))
    try:
        await provider.complete(UpstreamRequest({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "r"))
    except GatewayError as exc:
        return exc
    finally:
        await provider.aclose()


def test_an_upstream_that_accepts_no_connection_is_unreachable_not_slow() -> None:
    """A connect timeout means the request never left the gateway: that is the unreachable upstream
    of docs/architecture.md (502 upstream_unreachable), not an upstream that "did not answer in time"
    (504, which says a call may have run, and been billed)."""
    with _blackholed_port() as port:
        error = asyncio.run(asyncio.wait_for(_call_upstream(f"http://127.0.0.1:{port}/v1"), 10))
    assert (error.http_status, error.code) == (502, "upstream_unreachable")
    assert "connect timeout" in error.message


@contextlib.asynccontextmanager
async def _one_connection_provider(answer, connect_timeout: float):
    """An OpenAI-compatible provider with max_connections=1 and read_timeout 1 s, whose upstream
    answers chat calls with `answer`; yields the provider and a chat request."""
    from aiproxy.providers.base import UpstreamRequest
    from aiproxy.providers.openai_compat import OpenAICompatibleProvider

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    async with _serving(app) as base_url:
        provider = OpenAICompatibleProvider(ProviderSettings(name="t", kind="openai", base_url=f"{base_url}/v1",
                                                             connect_timeout=connect_timeout, read_timeout=1,
                                                             max_connections=1))
        try:
            yield provider, UpstreamRequest({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "r")
        finally:
            await provider.aclose()


async def _call_past_a_full_pool():
    """The errors of two chat calls to an upstream that holds every call, with max_connections=1:
    the one that waited for the pool's only connection, then the one that had it."""
    from aiproxy.errors import GatewayError

    async def hold(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)  # past the read timeout; the server waits for it at cleanup
        return web.json_response({})

    async with _one_connection_provider(hold, connect_timeout=0.3) as (provider, request):
        holder = asyncio.create_task(provider.complete(request))
        await asyncio.sleep(0.1)  # the holder has the connection
        errors = await asyncio.gather(provider.complete(request), holder, return_exceptions=True)
    assert all(isinstance(error, GatewayError) for error in errors), errors
    return errors


def test_a_call_that_finds_every_pooled_connection_busy_says_so() -> None:
    """Was: 502 upstream_unreachable "no connection opened within the connect timeout", which sends
    an operator after a network fault while the upstream answers fine and the gateway's own
    max_connections is the limit (aiohttp raises one error for the pool wait and the connect)."""
    waited, held = asyncio.run(asyncio.wait_for(_call_past_a_full_pool(), 10))
    assert (waited.http_status, waited.code) == (503, "upstream_busy")
    assert waited.message == ("The upstream provider 't' is busy: all 1 of its connections are in use and none came"
                              " free within 0.3 s (the provider's max_connections); retry later.")
    assert (held.http_status, held.code) == (504, "upstream_timeout")  # the call holding it: a read timeout


async def _two_calls_through_one_connection() -> list:
    """Two chat calls, max_connections=1, to an upstream that answers each in 0.7 s, read_timeout 1 s:
    the second waits 0.7 s for the connection, then has its answer 0.7 s after sending it."""
    arrived = asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(0.7)
        return web.json_response({"choices": []})

    async with _one_connection_provider(answer, connect_timeout=2) as (provider, request):
        first = asyncio.create_task(provider.complete(request))
        await arrived.wait()  # the first call has the connection
        return await asyncio.gather(first, provider.complete(request), return_exceptions=True)


def test_the_answer_deadline_counts_from_the_request_going_out_not_from_a_wait_for_a_connection() -> None:
    """The whole answer must come within read_timeout of the request being sent; a wait for a free
    connection is bounded by connect_timeout (then 503), and is not taken from the answer's time."""
    answers = asyncio.run(asyncio.wait_for(_two_calls_through_one_connection(), 10))
    assert [answer.body for answer in answers] == [{"choices": []}, {"choices": []}], answers


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _call_untrusted_tls():
    """A chat call to a TLS server whose certificate no system CA signed."""
    import ssl

    trustme = pytest.importorskip("trustme")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0, ssl=context)
    async with server:
        return await _call_upstream(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")


def test_an_unreachable_upstream_says_why_without_its_address() -> None:
    """An operator reading "unreachable: ConnectError" cannot tell a refused port from a certificate
    problem; aiohttp's own message names the host and port, which clients must not see."""
    port = _closed_port()
    refused = asyncio.run(asyncio.wait_for(_call_upstream(f"http://127.0.0.1:{port}/v1"), 10))
    assert refused.message == "The upstream provider 't' is unreachable: connection refused."
    untrusted = asyncio.run(asyncio.wait_for(_call_untrusted_tls(), 10))
    assert (untrusted.http_status, untrusted.code) == (502, "upstream_unreachable")
    assert "is unreachable: its TLS certificate was not accepted (" in untrusted.message
    for error in (refused, untrusted):
        assert "127.0.0.1" not in error.message and str(port) not in error.message


def test_a_host_name_that_does_not_resolve_is_named_as_such() -> None:
    import socket

    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    from aiproxy.providers.aiohttp_transport import _connect_failure

    key = ConnectionKey("llm.internal", 443, True, True, None, None, None)
    failure = aiohttp.ClientConnectorDNSError(key, socket.gaierror(-2, "Name or service not known"))
    assert _connect_failure(failure) == "its host name did not resolve (Name or service not known)"
