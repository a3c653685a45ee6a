"""A fake OpenAI-compatible upstream (OpenAI / OpenRouter wire format) on 127.0.0.1.

It records every request it receives and answers from a script of replies (FIFO), or with a
plain echo completion when the script is empty. Replies cover what the gateway must handle:
JSON bodies, SSE streams split at arbitrary byte boundaries, OpenRouter keep-alive comments and error shapes (numeric
`code`, mid-stream `finish_reason: "error"` chunks), rate-limit headers, and hanging calls
whose cancellation is observed. Runs on its own event loop in a thread, so sync and async
tests can use it alike; `python -m aiproxy.testing.fake_openai --port N` serves it standalone
(`--stream-chunks 20` makes the default streamed reply longer, as benchmarks want).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from aiproxy.testing.awkward_sse import EventStreamWrites, write_event_stream
from aiproxy.testing.trickle import TrickleReply, trickle


@dataclass
class JSONReply:
    body: dict
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RawReply:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class SSEComment(str):
    """A comment event in a StreamReply: `: <text>`, as OpenRouter's `: OPENROUTER PROCESSING`."""


@dataclass
class StreamReply:
    """`events` are chunk dicts, raw `data:` payload strings or SSEComments; `[DONE]` is appended unless
    `done=False`. The stream is one write, or one write per event with `per_event` (a server
    that flushes every token), or cut at the byte offsets in `splits`; `delay` pauses after each write."""

    events: list
    splits: list[int] | None = None
    per_event: bool = False
    delay: float = 0.0
    done: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    hang_after: bool = False  # keep the connection open after the events (cancellation tests)

    def frames(self) -> list[bytes]:
        frames = [b": " + item.encode() + b"\n\n" if isinstance(item, SSEComment)
                  else b"data: " + (item.encode() if isinstance(item, str) else orjson.dumps(item)) + b"\n\n"
                  for item in self.events]
        if self.done:
            frames.append(b"data: [DONE]\n\n")
        return frames

    def payload(self) -> bytes:
        return b"".join(self.frames())

    def writes(self) -> list[bytes]:
        if self.per_event:
            return self.frames()
        payload = self.payload()
        cuts = [0, *sorted(set(self.splits or [])), len(payload)]
        return [payload[start:end] for start, end in zip(cuts, cuts[1:], strict=False) if end > start]


@dataclass
class EndlessReply:
    """A body that never ends: `head`, then filler until the gateway hangs up (a huge error page,
    or with status 200 an answer or a stream event that never ends)."""

    status: int = 500
    head: bytes = b'{"error": {"message": "'
    content_type: str = "application/json"


@dataclass
class EndlessStreamReply:
    """A stream of content chunks that never ends, written as fast as the gateway reads it (a
    client that stops reading must throttle it)."""

    piece: str = "y" * 1000


@dataclass
class HangReply:
    """Never answers; records when the gateway gives up on the call."""

    seconds: float = 30.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    json: object
    cancelled_at: float | None = None
    received_at: float = field(default_factory=time.monotonic)


def completion(content: str = "Hello!", model: str = "upstream/model", **extra) -> dict:
    body = {
        "id": "chatcmpl-fake-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        "system_fingerprint": "fp_fake",
    }
    body.update(extra)
    return body


def text_chunks(pieces: list[str], model: str = "upstream/model", usage: bool = True, finish: str = "stop") -> list[dict]:
    base = {"id": "chatcmpl-fake-s", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "system_fingerprint": "fp_fake"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                    "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "logprobs": None, "finish_reason": None}]}
               for p in pieces]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
    if usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces),
                                                        "total_tokens": 5 + len(pieces)}})
    return chunks


DEFAULT_PIECES = ["Hello", " from", " upstream"]


def stream_pieces(count: int) -> list[str]:
    """The content deltas of the default streamed reply: the classic three, or `count` words."""
    return DEFAULT_PIECES if count == len(DEFAULT_PIECES) else [f" word{i}" for i in range(count)]


class FakeOpenAIUpstream:
    def __init__(self, port: int = 0, latency: float = 0.0, stream_chunks: int = len(DEFAULT_PIECES)) -> None:
        self.port = port
        self.latency = latency
        self.stream_pieces = stream_pieces(stream_chunks)
        self.script: deque = deque()
        self.received: list[Received] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    # --- control ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *replies) -> None:
        self.script.extend(replies)

    def reset(self) -> None:
        self.script.clear()
        self.received.clear()

    def wait_cancelled(self, timeout: float = 5.0, count: int = 1) -> Received:
        """The first call the gateway gave up on, once `count` of them were."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cancelled = [item for item in self.received if item.cancelled_at is not None]
            if len(cancelled) >= count:
                return cancelled[0]
            time.sleep(0.005)
        raise AssertionError(f"fewer than {count} upstream calls were cancelled")

    # --- server ----------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "upstream/model", "object": "model",
                                                              "created": 1700000000, "owned_by": "fake"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        item = Received(request.path, {k.lower(): v for k, v in request.headers.items()}, raw, parsed)
        self.received.append(item)
        reply = self.script.popleft() if self.script else None
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._answer(request, reply, parsed)
        except (asyncio.CancelledError, ConnectionResetError):
            item.cancelled_at = time.monotonic()
            raise

    async def _answer(self, request, reply, parsed) -> web.StreamResponse:
        if reply is None:
            if isinstance(parsed, dict) and parsed.get("stream"):
                reply = StreamReply(text_chunks(self.stream_pieces, model=str(parsed.get("model"))), per_event=True)
            else:
                model = parsed.get("model") if isinstance(parsed, dict) else "upstream/model"
                reply = JSONReply(completion(model=str(model)))
        if isinstance(reply, JSONReply):
            return web.Response(body=orjson.dumps(reply.body), status=reply.status, headers=reply.headers,
                                content_type="application/json")
        if isinstance(reply, RawReply):
            return web.Response(body=reply.body, status=reply.status, headers=reply.headers,
                                content_type=reply.content_type)
        if isinstance(reply, TrickleReply):
            return await trickle(request, reply)
        if isinstance(reply, EventStreamWrites):
            return await write_event_stream(request, reply)
        if isinstance(reply, HangReply):
            await asyncio.sleep(reply.seconds)
            return web.Response(status=504)
        if isinstance(reply, EndlessReply):
            response = web.StreamResponse(status=reply.status, headers={"Content-Type": reply.content_type})
            await response.prepare(request)
            await response.write(reply.head)
            while True:
                await response.write(b"x" * 65536)
        if isinstance(reply, EndlessStreamReply):
            response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            content = text_chunks([reply.piece] * 16, usage=False)[1:-1]  # no role chunk, no finish
            burst = StreamReply(content, done=False).payload()
            while True:
                await response.write(burst)
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        for piece in reply.writes():
            await response.write(piece)
            if reply.delay:
                await asyncio.sleep(reply.delay)
        if reply.hang_after:
            await asyncio.sleep(30)
        await response.write_eof()
        return response

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> FakeOpenAIUpstream:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream for tests and benchmarks.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--stream-chunks", type=int, default=len(DEFAULT_PIECES),
                        help="content deltas in the default streamed reply")
    args = parser.parse_args()
    server = FakeOpenAIUpstream(args.port, args.latency_ms / 1000, args.stream_chunks).start()
    print(server.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
