"""An upstream answer that keeps sending but never gets anywhere, for the fake upstreams: a JSON
body a byte at a time, an event stream of keep-alive comments only, an event that never ends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web


@dataclass
class TrickleReply:
    """A 200 of `content_type`: `head` at once, then `drip` every `interval` seconds until the
    client hangs up (the fake upstream records when it does)."""

    drip: bytes
    head: bytes = b""
    interval: float = 0.1
    content_type: str = "application/json"


async def trickle(request: web.Request, reply: TrickleReply) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": reply.content_type})
    await response.prepare(request)
    if reply.head:
        await response.write(reply.head)
    while True:
        await asyncio.sleep(reply.interval)
        await response.write(reply.drip)
