"""The bare aiohttp pass-through issue 2 calibrates its latency targets with ("adds about 0.2 ms"):
POST /v1/chat/completions is forwarded byte for byte to the upstream over a keep-alive aiohttp
session and the answer is streamed back as it arrives. No parsing, auth, routing or logging:
the floor of any Python proxy on this machine. Prints its base URL (…/v1) once it listens.

    python test/bench/passthrough.py --upstream http://127.0.0.1:PORT/v1 [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import aiohttp
from aiohttp import web

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


def build_app(upstream: str) -> web.Application:
    target = f"{upstream.rstrip('/')}/chat/completions"
    app = web.Application()

    async def session_context(app: web.Application):
        app["session"] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with app["session"].post(target, data=body, headers=headers) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={k: v for k, v in upstream_response.headers.items() if k.lower() not in _HOP_BY_HOP},
            )
            await response.prepare(request)
            async for piece in upstream_response.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    app.cleanup_ctx.append(session_context)
    app.router.add_post("/v1/chat/completions", forward)
    return app


async def serve(upstream: str, port: int) -> None:
    sock = socket.create_server(("127.0.0.1", port))
    runner = web.AppRunner(build_app(upstream), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, ending in /v1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.upstream, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
