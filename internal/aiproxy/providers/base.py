"""The one interface every upstream provider implements.

Providers speak OpenAI-shaped dicts on both sides: they receive the client's request body
(with `model` already rewritten to the upstream id) and return OpenAI response bodies or
stream chunks. A provider that talks another API (Gemini) translates inside its module.
Errors are raised as aiproxy.errors.GatewayError subclasses.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from aiproxy.identity import metadata_safe

# Upstream response headers a client may act on; everything else stays at the gateway.
FORWARDED_HEADER_PREFIXES = ("x-ratelimit-",)
FORWARDED_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")
# They travel as gRPC metadata, which clients refuse beyond 8-16 KiB in all: each (name and value) is
# kept to 256 bytes and all of them to 4 KiB; real upstreams send a handful of short ones.
MAX_FORWARDED_HEADER_BYTES = 256
MAX_FORWARDED_BYTES = 4096
# What gRPC accepts as a text metadata key. HTTP allows more in a name (`!`, `~`, `*`…), which grpc.aio
# refuses, and a `-bin` key must carry bytes: either failed the call (an error's status never left).
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")


@functools.lru_cache(maxsize=1024)
def system_fingerprint(provider_kind: str, model: str) -> str:
    """The seed's `system_fingerprint` for answers the upstream left without one: `fp_openrouter_` or
    `fp_gemini_` and 8 hex digits of the model. The seed took them from Python's per-process `hash()`;
    these come from SHA-256, so they stay the same across restarts and workers."""
    return f"fp_{provider_kind}_{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def wants_usage(body: dict) -> bool:
    """Whether a stream request asked for the closing usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def redacted(message: str, api_key: str) -> str:
    """message without the gateway's provider key: upstreams quote it (Google's "Consumer 'api_key:…' has
    been suspended", a proxy echoing request headers), and the message reaches clients and logs."""
    return message.replace(api_key, "[redacted]") if api_key and message else message


def forwardable_headers(headers) -> dict[str, str]:
    """The subset of upstream headers that reach the client (rate-limit and retry hints). They travel
    as gRPC metadata, which holds printable ASCII only, and not much of it: a value with a tab or a
    non-ASCII character, a name that is no text metadata key, or beyond the sizes above, stays behind
    (grpc.aio refused it, or the facade the metadata, and with it the whole answer)."""
    out = {}
    room = MAX_FORWARDED_BYTES
    for name, value in headers.items():
        lower = name.lower()
        if lower not in FORWARDED_HEADERS and not lower.startswith(FORWARDED_HEADER_PREFIXES):
            continue
        if not _METADATA_KEY.fullmatch(lower) or lower.endswith("-bin"):
            continue
        size = len(lower) + len(value)
        if size <= min(MAX_FORWARDED_HEADER_BYTES, room) and metadata_safe(value):
            out[lower] = value
            room -= size
    return out


@dataclass(slots=True)
class UpstreamRequest:
    body: dict  # OpenAI chat request; `model` is the upstream model id
    request_id: str


@dataclass(slots=True)
class UpstreamResponse:
    body: dict  # OpenAI `chat.completion`
    headers: dict[str, str] = field(default_factory=dict)


class UpstreamStream(Protocol):
    """An open streaming call. Iterating yields batches: lists of OpenAI `chat.completion.chunk`
    dicts that were ready together (decoded from one upstream read), in order, never empty. A
    batch is handed on as soon as it is read, so batching adds no latency; it only saves per-message
    work when the upstream is faster than the client. Iteration ends normally only when the
    upstream marked its stream complete; a stream cut short raises UpstreamStreamTruncated, so it
    is never relayed or logged as a finished answer."""

    headers: dict[str, str]
    # Token usage the upstream reported but the stream did not carry to the client (Gemini sends
    # running totals whether or not usage was asked for); read after iterating, for the request log.
    usage: dict | None

    def __aiter__(self) -> AsyncIterator[list[dict]]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    name: str

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        """Send the request and check the status and that the answer is an event stream; errors
        before the first chunk raise here."""
        ...

    async def aclose(self) -> None: ...
