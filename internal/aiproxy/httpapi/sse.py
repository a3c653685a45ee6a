"""OpenAI's SSE framing: `data: <json>\\n\\n` per chunk, `data: [DONE]\\n\\n` at the end."""

from __future__ import annotations

import orjson

DONE = b"data: [DONE]\n\n"
HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell nginx-style proxies not to buffer the stream
}


def event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def comment(text: str) -> bytes:
    """A comment event, one `: ` line per line of `text` (so no text can end it early)."""
    return b"".join(b": " + line.encode() + b"\n" for line in text.splitlines() or [""]) + b"\n"
