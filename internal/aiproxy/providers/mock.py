"""The built-in deterministic provider: answers without any upstream, so `make run` works with
no keys, and tests and demos have a stable model.

Models: `echo` repeats the last user message; `tools` calls the first tool the request
defines (then, once a `tool` message answers, summarises it). Directives in the last user
message steer it: `[mock:error=429]` fails with that status, `[mock:delay_ms=250]` waits
before answering (and between stream chunks), `[mock:chunks=20]` fixes the stream chunk count.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator

import orjson

from aiproxy.config import ProviderSettings
from aiproxy.errors import UpstreamError, error_type_for_http
from aiproxy.providers.base import UpstreamRequest, UpstreamResponse, wants_usage

_DIRECTIVE = re.compile(r"\[mock:(error|delay_ms|chunks)=(\d+)\]")


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"
                        and isinstance(p.get("text"), str))
    return ""


def _tokens(text: str) -> int:
    return len(text.split())


class MockProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name

    async def aclose(self) -> None:
        return None

    # --- the deterministic "model" ---------------------------------------------------------

    def _plan(self, request: UpstreamRequest) -> tuple[dict, dict[str, int]]:
        body = request.body
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
        prompt = _text_of(last_user.get("content"))
        directives = {k: int(v) for k, v in _DIRECTIVE.findall(prompt)}
        status = directives.get("error")
        if status and 400 <= status <= 599:
            headers = {"retry-after": "1", "x-ratelimit-remaining-requests": "0"} if status == 429 else {}
            raise UpstreamError(
                f"mock provider: simulated HTTP {status}",
                http_status=status,
                error_type=error_type_for_http(status),
                code="rate_limit_exceeded" if status == 429 else "mock_error",
                headers=headers,
            )
        tools = body.get("tools") if isinstance(body.get("tools"), list) else []
        answered = bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
        if body.get("model") == "tools" and tools and not answered:
            function = tools[0].get("function") if isinstance(tools[0], dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            name = name if isinstance(name, str) and name else "tool"  # a call named 5 fits no client's schema
            digest = hashlib.sha256(prompt.encode()).hexdigest()[:24]
            message = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": f"call_{digest}",
                        "type": "function",
                        "function": {"name": name, "arguments": orjson.dumps({"query": prompt}).decode()},
                    }
                ],
            }
            finish = "tool_calls"
        else:
            if answered:
                text = f"Tool result: {_text_of(messages[-1].get('content'))}"
            else:
                text = _DIRECTIVE.sub("", prompt).strip() or "Hello from the mock provider."
            message = {"role": "assistant", "content": text, "refusal": None}
            finish = "stop"
        prompt_tokens = sum(_tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        completion_tokens = _tokens(message["content"] or "") + (8 if finish == "tool_calls" else 0)
        plan = {"message": message, "finish_reason": finish, "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }}
        return plan, directives

    @staticmethod
    def _envelope(request: UpstreamRequest, obj: str) -> dict:
        return {
            "id": f"chatcmpl-mock-{request.request_id}",
            "object": obj,
            "created": int(time.time()),
            "model": f"mock/{request.body.get('model', 'echo')}",
            "system_fingerprint": "fp_mock",
        }

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        plan, directives = self._plan(request)
        if "delay_ms" in directives:
            await asyncio.sleep(directives["delay_ms"] / 1000)
        body = self._envelope(request, "chat.completion")
        body["choices"] = [{"index": 0, "message": plan["message"], "logprobs": None, "finish_reason": plan["finish_reason"]}]
        body["usage"] = plan["usage"]
        return UpstreamResponse(body=body)

    async def open_stream(self, request: UpstreamRequest) -> _MockStream:
        plan, directives = self._plan(request)
        return _MockStream(self._envelope(request, "chat.completion.chunk"), plan, directives, request.body)


class _MockStream:
    headers: dict[str, str] = {}
    usage = None  # usage is streamed when asked for

    def __init__(self, envelope: dict, plan: dict, directives: dict[str, int], body: dict) -> None:
        self._envelope = envelope
        self._plan = plan
        self._delay = directives.get("delay_ms", 0) / 1000
        self._chunks = directives.get("chunks")
        self._include_usage = wants_usage(body)

    def _chunk(self, delta: dict, finish: str | None = None) -> dict:
        chunk = dict(self._envelope)
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _pieces(self, text: str) -> list[str]:
        if not self._chunks:
            words = text.split(" ")
            return [w if i == 0 else " " + w for i, w in enumerate(words)]
        count = min(self._chunks, len(text))  # even pieces: a fixed size gave 15 for chunks=20 of 29 characters
        return [text[len(text) * i // count : len(text) * (i + 1) // count] for i in range(count)]

    async def __aiter__(self) -> AsyncIterator[list[dict]]:
        # One batch, or with delay_ms one per piece, as an upstream that pauses before its first
        # token and between tokens.
        if self._delay:
            await asyncio.sleep(self._delay)
        message = self._plan["message"]
        batch = [self._chunk({"role": "assistant", "content": "" if message["content"] is not None else None})]
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            batch.append(self._chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                                      "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            batch.append(self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}))
        else:
            for piece in self._pieces(message["content"]):
                if self._delay:
                    yield batch
                    await asyncio.sleep(self._delay)
                    batch = []
                batch.append(self._chunk({"content": piece}))
        batch.append(self._chunk({}, self._plan["finish_reason"]))
        if self._include_usage:
            usage_chunk = dict(self._envelope)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._plan["usage"]
            batch.append(usage_chunk)
        yield batch

    async def aclose(self) -> None:
        return None
