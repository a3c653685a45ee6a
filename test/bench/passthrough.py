"""The bare pass-throughs `make bench` calibrates against, each in front of the fake upstream.

- default: the bare aiohttp pass-through issue 2 calibrates its latency targets with ("adds about
  0.2 ms"): POST /v1/chat/completions is forwarded byte for byte over a keep-alive aiohttp session
  and the answer streamed back as it arrives. No parsing, auth, routing or logging: the floor of any
  Python proxy on this machine.
- `--grpc-hop`: the same, with design.md's shape: the aiohttp side hands the body to a grpc.aio
  server on the same event loop through a unix-socket channel (raw bytes, no protobuf), which makes
  the upstream call; a JSON answer comes back as one message, a stream as one message per upstream
  read. The floor of the architecture before it does any work of its own.

Prints its base URL (…/v1) once it listens.

    python test/bench/passthrough.py --upstream http://127.0.0.1:PORT/v1 [--grpc-hop] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile

import aiohttp
import grpc
import orjson
from aiohttp import web

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
_SSE = {"Content-Type": "text/event-stream"}
_JSON = {"Content-Type": "application/json"}
# The hop's server and channel live as long as the app (an unreferenced grpc.aio server is stopped).
_HOP = web.AppKey("grpc_hop", tuple)


class Upstream:
    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.session = aiohttp.ClientSession(auto_decompress=False)

    def post(self, body: bytes):
        return self.session.post(self.url, data=body, headers=_JSON)


def direct_app(upstream: Upstream) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with upstream.post(body) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={k: v for k, v in upstream_response.headers.items() if k.lower() not in _HOP_BY_HOP},
            )
            await response.prepare(request)
            async for piece in upstream_response.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    return app


async def grpc_hop_app(upstream: Upstream) -> web.Application:
    async def call(body: bytes, context) -> bytes:
        async with upstream.post(body) as upstream_response:
            return await upstream_response.read()

    async def stream(body: bytes, context):
        async with upstream.post(body) as upstream_response:
            async for piece in upstream_response.content.iter_any():
                yield piece

    handlers = {"Call": grpc.unary_unary_rpc_method_handler(call),
                "Stream": grpc.unary_stream_rpc_method_handler(stream)}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Hop", handlers),))
    path = os.path.join(tempfile.gettempdir(), f"bench-hop-{os.getpid()}.sock")
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix:{path}")
    unary, streamed = channel.unary_unary("/bench.Hop/Call"), channel.unary_stream("/bench.Hop/Stream")

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if orjson.loads(body).get("stream") is not True:
            return web.Response(body=await unary(body), headers=_JSON)
        response = web.StreamResponse(headers=_SSE)
        await response.prepare(request)
        async for piece in streamed(body):
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app[_HOP] = (server, channel)
    app.router.add_post("/v1/chat/completions", forward)
    return app


async def serve(upstream_url: str, port: int, grpc_hop: bool) -> None:
    upstream = Upstream(upstream_url)
    app = await grpc_hop_app(upstream) if grpc_hop else direct_app(upstream)
    sock = socket.create_server(("127.0.0.1", port))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, ending in /v1")
    parser.add_argument("--grpc-hop", action="store_true", help="route each call through a grpc.aio unix-socket hop")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.upstream, args.port, args.grpc_hop))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
