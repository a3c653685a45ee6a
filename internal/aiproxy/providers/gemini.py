"""The `gemini` provider: Google's Generative Language API v1beta, called directly over httpx.

OpenAI chat requests are translated to `models/{model}:generateContent` (or
`:streamGenerateContent?alt=sse`) and the answers back to OpenAI bodies and chunks; the
translation lives in gemini_translate / gemini_response / gemini_errors, this module only
moves bytes. The key travels in the `x-goog-api-key` header, never in the URL (URLs get logged).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import httpx
from loguru import logger

from aiproxy.config import ProviderSettings
from aiproxy.deadline import UpstreamDeadline
from aiproxy.errors import GatewayError, InvalidRequest, UpstreamBadResponse, UpstreamUnreachable
from aiproxy.protojson import dump_parsed
from aiproxy.providers.base import UpstreamRequest, UpstreamResponse, forwardable_headers, wants_usage
from aiproxy.providers.gemini_errors import gemini_error, parse_error_body
from aiproxy.providers.gemini_response import StreamTranslator, to_openai_response
from aiproxy.providers.gemini_translate import gemini_model_id, to_gemini_request
from aiproxy.providers.http import (
    decoded_body,
    fetch_object,
    json_object,
    make_http_client,
    send_streaming,
    transport_error,
)
from aiproxy.sse import sse_batches

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


_UNEXPECTED_SHAPE = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def _unreadable(exc: Exception) -> UpstreamBadResponse:
    """The translators read Gemini's documented shapes. A type error while reading an answer means
    the upstream (or a proxy in front of it) sent another shape: a 502 for the client, the
    traceback for the operator, rather than the gateway's own internal error."""
    logger.opt(exception=exc).warning("gemini: an answer of an unexpected shape")
    return UpstreamBadResponse(f"The Gemini API sent an answer the gateway cannot read ({type(exc).__name__}).")


def _one_tool_call(body: dict) -> bool:
    """Whether the client allows at most one tool call. Gemini has no switch for parallel calls and may
    answer with several, so the answer keeps the first (docs/gemini.md)."""
    return body.get("parallel_tool_calls") is False


class GeminiProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self._key_env = settings.api_key_env
        self._api_key = settings.api_key
        self._max_answer_bytes = settings.max_answer_bytes
        # Operators paste either the host or the versioned URL from Google's docs; both work.
        base_url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/").removesuffix("/v1beta")
        settings = dataclasses.replace(settings, base_url=base_url)
        headers = {"content-type": "application/json"}
        if settings.api_key:
            headers["x-goog-api-key"] = settings.api_key
        self._client = make_http_client(settings, headers)
        # Merging a path into base_url costs ~70 us of URL parsing per call: the URLs in use are kept.
        self._url = functools.lru_cache(maxsize=1024)(self._method_url)

    def _method_url(self, model: str, method: str) -> httpx.URL:
        # A tuned model lives under its own collection (wire-formats.md §3.1), every other under models/.
        collection, name = model.split("/", 1) if model.startswith("tunedModels/") else ("models", model)
        path = f"/v1beta/{collection}/{quote(name, safe='-._~')}:{method}"
        params = {"alt": "sse"} if method == "streamGenerateContent" else None
        return self._client.build_request("POST", path, params=params).url

    def _prepare(self, body: dict, method: str) -> tuple[str, httpx.URL, bytes]:
        """(model id, URL, JSON payload) for one call."""
        model = gemini_model_id(str(body.get("model") or ""))
        if not model:
            raise InvalidRequest("'model' is required.", param="model")
        return model, self._url(model, method), dump_parsed(to_gemini_request(body))

    def _error(self, status: int, body: bytes, headers) -> GatewayError:
        return self._mapped_error(status, parse_error_body(body), headers)

    def _mapped_error(self, status: int, error: dict, headers) -> GatewayError:
        return gemini_error(status, error, headers, self._key_env, self._api_key)

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        model, url, payload = self._prepare(request.body, "generateContent")
        http_request = self._client.build_request("POST", url, content=payload)
        data, headers = await fetch_object(self._client, http_request, self.name, self._error, "The Gemini API",
                                           self._max_answer_bytes)
        try:
            body = to_openai_response(data, model, _one_tool_call(request.body))
        except _UNEXPECTED_SHAPE as exc:
            raise _unreadable(exc) from None
        return UpstreamResponse(body=body, headers=forwardable_headers(headers))

    async def open_stream(self, request: UpstreamRequest) -> GeminiStream:
        model, url, payload = self._prepare(request.body, "streamGenerateContent")
        http_request = self._client.build_request("POST", url, content=payload, headers={"accept": "text/event-stream"})
        response, deadline = await send_streaming(self._client, http_request, self.name, self._error)
        translator = StreamTranslator(model, wants_usage(request.body), _one_tool_call(request.body))
        return GeminiStream(self.name, self._mapped_error, response, deadline, translator, self._max_answer_bytes)

    async def aclose(self) -> None:
        await self._client.aclose()


class GeminiStream:
    """An open `streamGenerateContent?alt=sse` call; iterating yields batches of OpenAI chunks,
    one per upstream read."""

    def __init__(
        self, provider: str, error: Callable[[int, dict, dict], GatewayError], response: httpx.Response,
        deadline: UpstreamDeadline, translator: StreamTranslator, max_event_bytes: int,
    ) -> None:
        self._provider = provider
        self._error = error  # (status, `error` object, headers) -> the domain error
        self._response = response
        self._deadline = deadline
        self._translator = translator
        self._max_event_bytes = max_event_bytes
        self.headers = forwardable_headers(response.headers)

    @property
    def usage(self) -> dict | None:
        return self._translator.usage

    async def __aiter__(self) -> AsyncIterator[list[dict]]:
        try:
            # Decoded, a bounded piece at a time: Google may gzip the event stream.
            body = decoded_body(self._response, self._max_event_bytes + 1)
            async for batch in sse_batches(body, self._translate, self._max_event_bytes, "The Gemini API",
                                           self._deadline):
                yield batch
            try:
                batch = self._translator.finish()  # raises when the stream was cut short
            except _UNEXPECTED_SHAPE as exc:
                raise _unreadable(exc) from None
            if batch:
                yield batch
        except httpx.TimeoutException as exc:
            raise transport_error(self._provider, exc) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(
                f"The connection to the Gemini API broke before the answer was finished ({type(exc).__name__})."
            ) from None
        finally:
            await self._response.aclose()

    def _translate(self, data: str) -> list[dict]:
        event = json_object(data, "The Gemini API sent a stream event")
        error = event.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            status = code if isinstance(code, int) and 400 <= code <= 599 else 502
            raise self._error(status, error, {})
        try:
            return self._translator.feed(event)
        except _UNEXPECTED_SHAPE as exc:  # a plain try: this runs for every event of a stream
            raise _unreadable(exc) from None

    async def aclose(self) -> None:
        await self._response.aclose()
