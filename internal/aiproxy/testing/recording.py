"""httpx transports that keep a copy of every response body, so tests can validate all that
the gateway returned (JSON bodies and each SSE event) against OpenAI's schemas."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import orjson

from aiproxy.sse import Comment, SSEDecoder


@dataclass
class Captured:
    method: str
    path: str
    status: int
    content_type: str
    body: bytearray = field(default_factory=bytearray)

    def documents(self) -> list[tuple[str, object]]:
        """(schema name, parsed document) for each JSON document in this response."""
        if self.content_type.startswith("text/event-stream"):
            decoder = SSEDecoder()
            events = decoder.feed(bytes(self.body)) + decoder.flush()
            out = []
            for data in events:
                if data == "[DONE]" or type(data) is Comment:
                    continue
                doc = orjson.loads(data)
                out.append(("ErrorResponse" if "error" in doc else "CreateChatCompletionStreamResponse", doc))
            return out
        if not self.body:
            return []
        doc = orjson.loads(bytes(self.body))
        if self.status >= 400:
            return [("ErrorResponse", doc)]
        if self.path.endswith("/chat/completions"):
            return [("CreateChatCompletionResponse", doc)]
        if self.path.endswith("/models"):
            return [("ListModelsResponse", doc)]
        if "/models/" in self.path:
            return [("Model", doc)]
        return []


class _Tee(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, inner, captured: Captured) -> None:
        self._inner = inner
        self._captured = captured

    def __iter__(self):
        for chunk in self._inner:
            self._captured.body += chunk
            yield chunk

    async def __aiter__(self):
        async for chunk in self._inner:
            self._captured.body += chunk
            yield chunk

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _capture(request: httpx.Request, response: httpx.Response, log: list[Captured]) -> httpx.Response:
    captured = Captured(request.method, request.url.path, response.status_code, response.headers.get("content-type", ""))
    log.append(captured)
    response.stream = _Tee(response.stream, captured)
    return response


class RecordingTransport(httpx.HTTPTransport):
    def __init__(self, log: list[Captured], **kwargs) -> None:
        super().__init__(**kwargs)
        self.log = log

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return _capture(request, super().handle_request(request), self.log)


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, log: list[Captured], **kwargs) -> None:
        super().__init__(**kwargs)
        self.log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return _capture(request, await super().handle_async_request(request), self.log)
