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
    """A comment event, one `: ` line per line of `text` (so no text can end it early). The decoder
    joined the upstream's lines with `\\n` and no other character ends an SSE line, so only `\\n`
    splits: str.splitlines would also break the comment at U+2028, form feeds or \\x1c-\\x1e."""
    return b"".join(b": " + line.encode() + b"\n" for line in text.split("\n")) + b"\n"
