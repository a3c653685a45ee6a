"""Providers that speak the OpenAI Chat Completions wire format: `openai` (any compatible
server: OpenAI, vLLM, Ollama, llama.cpp…) and `openrouter` (the same plus attribution headers
and its own error shapes). Bodies pass through untouched apart from `model`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson

from aiproxy.config import ProviderSettings
from aiproxy.deadline import UpstreamDeadline
from aiproxy.errors import (
    SHOULD_RETRY,
    GatewayError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamStreamTruncated,
    error_type_for_http,
)
from aiproxy.protojson import dump_parsed
from aiproxy.providers.base import (
    UpstreamRequest,
    UpstreamResponse,
    forwardable_headers,
    redacted,
    system_fingerprint,
    wants_usage,
)
from aiproxy.providers.http import (
    decoded_body,
    fetch_object,
    json_object,
    make_http_client,
    send_streaming,
    transport_error,
)
from aiproxy.sse import EndOfStream, sse_batches

_JSON = {"content-type": "application/json"}
# After `data: [DONE]` the body normally ends at once; reading that end lets httpx keep the
# connection (a half-read response is closed instead, costing a new TCP+TLS handshake per stream).
# An upstream that keeps the body open longer than this is cut off as before.
_DRAIN_AFTER_DONE_SECONDS = 0.05


def _error_object(body) -> dict:
    """The error object of an upstream answer: `{"error": {...}}` (OpenAI, OpenRouter), a bare
    `{"error": "message"}` (LM Studio, Ollama's own API, some OpenRouter answers), vLLM's and
    Mistral's unwrapped `{"object": "error", "message": ...}`, or FastAPI's `{"detail": ...}` (a
    text, or a list of validation errors), which many self-hosted servers answer with."""
    if not isinstance(body, dict):
        return {}
    error = body.get("error")
    if isinstance(error, dict):
        return error
    if error:
        return {"message": str(error)}
    if body.get("object") == "error":
        return body
    return {"message": body["detail"]} if body.get("detail") else {}


def _message_text(message) -> str | None:
    """An error's message as text: Mistral's 422 carries an object (FastAPI's validation errors), which
    is the only account of what was wrong, so it is kept as its JSON text."""
    if isinstance(message, str) or message is None:
        return message
    try:
        return orjson.dumps(message).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: the generic message instead
        return None


def upstream_error(settings: ProviderSettings, status: int, body: bytes, headers) -> GatewayError:
    """Normalise an upstream error status and its body to the OpenAI error body."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    return _normalised(settings, status, _error_object(parsed), headers)


def embedded_error(settings: ProviderSettings, chunk: dict, headers) -> GatewayError:
    """OpenRouter's failure inside a 200 answer: a stream chunk, a whole body or a choice that
    ended with finish_reason "error", with `error` (numeric or string code); a numeric HTTP code
    becomes the status, anything else 502."""
    error = _error_object(chunk) or {"message": f"The upstream provider '{settings.name}' failed mid-answer."}
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    return _normalised(settings, status, error, headers)


def _provider_reason(metadata: dict) -> str | None:
    """OpenRouter's account of the failure behind its generic "Provider returned error": the provider's
    own error in `metadata.raw` (its message when that is an error body, else the text), after
    `metadata.provider_name`."""
    raw = metadata.get("raw")
    parsed = raw
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
    reason = None
    if isinstance(parsed, dict):
        inner = _error_object(parsed) or parsed
        reason = next((inner[k] for k in ("message", "detail") if isinstance(inner.get(k), str) and inner[k]), None)
    if reason is None and isinstance(raw, str):
        reason = raw
    if not reason or not reason.strip():
        return None
    provider = metadata.get("provider_name")
    return f"{provider}: {reason.strip()}" if isinstance(provider, str) and provider else reason.strip()


def _normalised(settings: ProviderSettings, status: int, error: dict, headers) -> GatewayError:
    provider = settings.name
    message = _message_text(error.get("message"))
    metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
    reason = _provider_reason(metadata)
    if reason and message and reason not in message:
        message = f"{message} ({reason})"
    elif reason and not message:  # the provider's reason is the only account there is
        message = reason
    message = redacted(message, settings.api_key)
    if status == 401:
        # The provider rejected the gateway's own key: the operator must fix it, not the client.
        hint = f" Check {settings.api_key_env}." if settings.api_key_env else ""
        return UpstreamMisconfigured(f"The upstream provider '{provider}' rejected the gateway's API key.{hint}")
    code = error.get("code")
    if not isinstance(code, str):  # OpenRouter sends the HTTP status as an integer code
        code = metadata.get("error_type") if isinstance(metadata.get("error_type"), str) else None
    error_type = error.get("type") if isinstance(error.get("type"), str) else error_type_for_http(status)
    if status == 402:  # OpenRouter's "insufficient credits": OpenAI's name for it (wire-formats.md §4.6)
        error_type = code = "insufficient_quota"
    param = error.get("param") if isinstance(error.get("param"), str) else None
    forwarded = forwardable_headers(headers)
    if code == "insufficient_quota":  # OpenAI's is a 429, which SDKs retry: no retry pays the bill
        forwarded.setdefault(SHOULD_RETRY, "false")
    return UpstreamError(
        message or f"The upstream provider '{provider}' answered HTTP {status}.",
        http_status=status,
        error_type=error_type,
        code=code,
        param=param,
        headers=forwarded,
    )


class OpenAICompatibleProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self._settings = settings
        headers = {"content-type": "application/json", "accept": "application/json"}
        if settings.api_key:
            headers["authorization"] = f"Bearer {settings.api_key}"
        if settings.kind == "openrouter":
            if settings.referer:
                headers["http-referer"] = settings.referer
            if settings.title:
                headers["x-title"] = settings.title
        self._client = make_http_client(settings, headers)
        # Resolved once: merging a relative path into base_url costs ~0.1 ms of URL parsing per call.
        self._chat_url = self._client.build_request("POST", "/chat/completions").url
        # The seed gave every OpenRouter answer and chunk a system_fingerprint; many of OpenRouter's
        # backends send none (or null), so the gateway fills it in, keeping a real one.
        self._fingerprints = settings.kind == "openrouter"

    def _error(self, status: int, body: bytes, headers) -> GatewayError:
        return upstream_error(self._settings, status, body, headers)

    def _error_in_body(self, body: bytes, headers) -> GatewayError | None:
        """The error of a 200 answering a stream request with a JSON body that holds `error`, as a JSON
        request's (OpenRouter's way to report some failures): its message and status, not just a 502."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return embedded_error(self._settings, parsed, headers) if isinstance(parsed, dict) and parsed.get("error") else None

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        http_request = self._client.build_request("POST", self._chat_url, content=dump_parsed(request.body))
        body, headers = await fetch_object(
            self._client, http_request, self.name, self._error, f"The upstream provider '{self.name}'",
            self._settings.max_answer_bytes,
        )
        if not isinstance(body.get("choices"), list):
            if body.get("error"):  # OpenRouter reports some failures as a 200 with only `error`
                raise embedded_error(self._settings, body, headers)
            raise UpstreamBadResponse(f"The upstream provider '{self.name}' returned a body without a 'choices' list.")
        failed = next((c for c in body["choices"] if isinstance(c, dict) and c.get("finish_reason") == "error"), None)
        if failed is not None:  # OpenRouter's answer that failed partway: an error, not a finish_reason
            # Its error is in the choice, or else beside the choices.
            raise embedded_error(self._settings, failed if _error_object(failed) else body, headers)
        if self._fingerprints and body.get("system_fingerprint") is None:
            model = body.get("model") if isinstance(body.get("model"), str) else request.body.get("model")
            body["system_fingerprint"] = system_fingerprint(self._settings.kind, str(model))
        return UpstreamResponse(body=body, headers=forwardable_headers(headers))

    async def open_stream(self, request: UpstreamRequest) -> _OpenAIStream:
        http_request = self._client.build_request(
            "POST", self._chat_url, content=dump_parsed(request.body), headers={"accept": "text/event-stream"}
        )
        response, deadline = await send_streaming(self._client, http_request, self.name, self._error,
                                                  self._error_in_body)
        fingerprint = system_fingerprint(self._settings.kind, str(request.body.get("model"))) if self._fingerprints else None
        return _OpenAIStream(self._settings, response, deadline, _asks_for_usage(request.body), fingerprint)

    async def aclose(self) -> None:
        await self._client.aclose()


def _asks_for_usage(body: dict) -> bool:
    """OpenAI's `stream_options.include_usage`, or OpenRouter's own switch, `usage: {include: true}`,
    which its clients send to get the closing usage chunk (with `cost`)."""
    usage = body.get("usage")
    return wants_usage(body) or (isinstance(usage, dict) and usage.get("include") is True)


class _OpenAIStream:
    """Event-aligned chunks from an OpenAI-style SSE body, whatever the network splits; one batch
    per upstream read. OpenAI and OpenRouter end every complete stream with `data: [DONE]`; some
    OpenAI-compatible servers stop after the chunks carrying every choice's `finish_reason`. A body
    that ends with neither was cut short (a dropped connection, a crashed upstream) and is reported
    as an error rather than as a finished answer."""

    def __init__(self, settings: ProviderSettings, response: httpx.Response, deadline: UpstreamDeadline,
                 include_usage: bool, fingerprint: str | None = None) -> None:
        self._settings = settings
        self._fingerprint = fingerprint  # system_fingerprint for chunks that carry none (OpenRouter)
        self._response = response
        self._deadline = deadline
        self._done = False  # `data: [DONE]` was seen
        self._open: set[int] = set()  # choices seen whose finish_reason has not come yet
        self._finished = False  # a finish_reason came
        self.headers = forwardable_headers(response.headers)
        self._include_usage = include_usage
        self.usage = None  # a usage chunk the client did not ask for (OpenRouter always sends one)

    async def __aiter__(self) -> AsyncIterator[list[dict]]:
        # decoded (an upstream may gzip its event stream), a bounded piece at a time
        body = decoded_body(self._response, self._settings.max_answer_bytes + 1)
        try:
            settings = self._settings
            async for batch in sse_batches(body, self._parse, settings.max_answer_bytes,
                                           f"The upstream provider '{settings.name}'", self._deadline):
                yield batch
            if not (self._done or (self._finished and not self._open)):
                raise UpstreamStreamTruncated(
                    f"The upstream provider '{self._settings.name}' closed the stream before it was finished."
                )
            await _read_to_end(body)  # what follows [DONE], so the connection can be reused
        except httpx.HTTPError as exc:
            raise transport_error(self._settings.name, exc) from None
        finally:
            await self._response.aclose()

    def _parse(self, data: str) -> list[dict]:
        if data.lstrip().startswith("[DONE]"):  # the OpenAI SDK's test: text after the marker ends it too
            self._done = True
            raise EndOfStream
        chunk = json_object(data, f"The upstream provider '{self._settings.name}' sent a stream event")
        if chunk.get("error"):
            raise embedded_error(self._settings, chunk, self._response.headers)
        choices = chunk.get("choices")
        if self._fingerprint and chunk.get("system_fingerprint") is None:
            chunk["system_fingerprint"] = self._fingerprint
        if choices == [] and not self._include_usage and "usage" in chunk:
            # OpenAI sends this chunk only on request, and clients that read choices[0] of every chunk
            # (the SDK's own examples) fail on it: kept for the request log only.
            self.usage = chunk["usage"]
            return []
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    index = choice.get("index") if isinstance(choice.get("index"), int) else 0
                    if choice.get("finish_reason"):
                        if choice["finish_reason"] == "error":  # OpenRouter's, even without a top-level `error`
                            raise embedded_error(self._settings, choice, self._response.headers)
                        self._finished = True
                        self._open.discard(index)
                    else:
                        self._open.add(index)
        return [chunk]

    async def aclose(self) -> None:
        await self._response.aclose()


async def _read_to_end(body: AsyncIterator[bytes]) -> None:
    """Consume what follows [DONE] (normally just the end of the chunked body), briefly."""
    try:
        async with asyncio.timeout(_DRAIN_AFTER_DONE_SECONDS):
            async for _ in body:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass
