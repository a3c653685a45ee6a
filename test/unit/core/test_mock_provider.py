"""aiproxy.providers.mock: the deterministic built-in provider, called directly (no gateway)."""

from __future__ import annotations

import asyncio
import json

import pytest

from aiproxy.chat.assemble import StreamAssembler
from aiproxy.config import ProviderSettings
from aiproxy.errors import UpstreamError
from aiproxy.providers import build_provider
from aiproxy.providers.base import UpstreamRequest
from aiproxy.providers.mock import MockProvider

PROVIDER = MockProvider(ProviderSettings(name="mock", kind="mock"))
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def request(text="hello there", model="echo", request_id="r1", **body) -> UpstreamRequest:
    messages = body.pop("messages", None) or [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    return UpstreamRequest(body={"model": model, "messages": messages, **body}, request_id=request_id)


def complete(req: UpstreamRequest) -> dict:
    return asyncio.run(PROVIDER.complete(req)).body


def stream(req: UpstreamRequest) -> list[dict]:
    async def collect():
        upstream = await PROVIDER.open_stream(req)
        try:
            return [chunk async for batch in upstream for chunk in batch]
        finally:
            await upstream.aclose()

    return asyncio.run(collect())


def test_build_provider_picks_the_mock():
    assert isinstance(build_provider(ProviderSettings(name="m", kind="mock")), MockProvider)


def test_echo_repeats_the_last_user_message():
    body = complete(request("hello there"))
    assert body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-mock-r1"
    assert body["model"] == "mock/echo"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "hello there"
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_echo_reads_text_parts_and_is_deterministic():
    parts = [{"type": "text", "text": "look at"}, {"type": "image_url", "image_url": {"url": "data:,"}},
             {"type": "text", "text": "this"}]
    first = complete(request(messages=[{"role": "user", "content": parts}]))
    assert first["choices"][0]["message"]["content"] == "look at this"
    second = complete(request(messages=[{"role": "user", "content": parts}]))
    assert first["choices"] == second["choices"] and first["usage"] == second["usage"]


def test_echo_without_user_text_has_a_default_answer():
    body = complete(request(messages=[{"role": "system", "content": "sys"}]))
    assert body["choices"][0]["message"]["content"] == "Hello from the mock provider."


def test_tools_model_calls_the_first_tool():
    body = complete(request("weather in Paris?", model="tools", tools=[WEATHER_TOOL]))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"query": "weather in Paris?"}
    again = complete(request("weather in Paris?", model="tools", tools=[WEATHER_TOOL], request_id="r2"))
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] == call["id"]  # deterministic


def test_tools_model_summarises_a_tool_answer():
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
    ]
    body = complete(request(model="tools", tools=[WEATHER_TOOL], messages=messages))
    assert body["choices"][0]["message"]["content"] == "Tool result: sunny, 21C"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_tools_model_without_tools_echoes():
    assert complete(request("plain", model="tools"))["choices"][0]["message"]["content"] == "plain"


@pytest.mark.parametrize("status", [429, 400, 500, 503])
def test_error_directive(status):
    with pytest.raises(UpstreamError) as info:
        complete(request(f"please fail [mock:error={status}]"))
    error = info.value
    assert error.http_status == status
    if status == 429:
        assert error.headers["retry-after"] == "1"
        assert error.error_type == "rate_limit_error"
        assert error.code == "rate_limit_exceeded"
    else:
        assert error.headers == {}


def test_error_directive_also_fails_a_stream_before_the_first_chunk():
    async def open_it():
        await PROVIDER.open_stream(request("[mock:error=429]", stream=True))

    with pytest.raises(UpstreamError) as info:
        asyncio.run(open_it())
    assert info.value.http_status == 429 and "retry-after" in info.value.headers


def test_out_of_range_error_directive_is_ignored_and_directives_are_stripped():
    body = complete(request("hi [mock:error=200] there"))
    assert body["choices"][0]["message"]["content"] == "hi  there"


def test_stream_with_include_usage():
    chunks = stream(request("one two three", stream=True, stream_options={"include_usage": True}))
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-mock-r1" for c in chunks)
    *content_chunks, usage_chunk = chunks
    assert all(c["usage"] is None for c in content_chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert content_chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content_chunks)
    assert text == "one two three"
    assert content_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert [c["choices"][0]["finish_reason"] for c in content_chunks[:-1]] == [None] * (len(content_chunks) - 1)


def test_stream_without_include_usage_has_no_usage_key():
    chunks = stream(request("one two", stream=True))
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_assembles_to_the_non_stream_answer():
    for model, tools in (("echo", None), ("tools", [WEATHER_TOOL])):
        extra = {"tools": tools} if tools else {}
        req = request("what is up", model=model, stream_options={"include_usage": True}, **extra)
        assembler = StreamAssembler()
        for item in stream(req):
            assembler.add(item)
        assembled = assembler.result()
        whole = complete(req)
        assert assembled["choices"][0]["message"]["content"] == whole["choices"][0]["message"]["content"]
        assert assembled["choices"][0]["message"].get("tool_calls") == whole["choices"][0]["message"].get("tool_calls")
        assert assembled["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
        assert assembled["usage"] == whole["usage"]


def test_chunks_directive_fixes_the_chunk_count():
    chunks = stream(request("abcdefghij [mock:chunks=5]"))
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert pieces == ["ab", "cd", "ef", "gh", "ij"]


@pytest.mark.parametrize("text, count", [("abcdefghijk", 5), ("Hello from the mock provider.", 20), ("hi", 5)])
def test_chunks_directive_gives_that_many_pieces_whatever_the_length(text, count):
    chunks = stream(request(f"{text} [mock:chunks={count}]"))
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert "".join(pieces) == text and len(pieces) == min(count, len(text))  # 11 characters in 5 were 4 pieces


@pytest.mark.parametrize("model", ["echo", "tools"])
def test_delay_directive_delays_a_streams_first_chunk(model):
    async def first_chunk_after() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        upstream = await PROVIDER.open_stream(request("slow [mock:delay_ms=50]", model=model, tools=[WEATHER_TOOL]))
        try:
            async for _ in upstream:
                return loop.time() - start
        finally:
            await upstream.aclose()

    assert asyncio.run(first_chunk_after()) >= 0.045  # the role chunk came at once, a tool call with no delay at all


def test_delay_directive_waits():
    loop_time = []

    async def timed():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await PROVIDER.complete(request("slow [mock:delay_ms=50]"))
        loop_time.append(loop.time() - start)

    asyncio.run(timed())
    assert loop_time[0] >= 0.045


@pytest.mark.parametrize(
    "body",
    [
        {"tools": {"not": "a list"}},
        {"tools": ["not an object"]},
        {"tools": [{"type": "function", "function": "not an object"}]},
        {"tools": [{"type": "function"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}, {"type": "text"}, "x"]}]},
        {"messages": [{"role": "user", "content": {"unexpected": "object"}}]},
    ],
    ids=repr,
)
def test_malformed_requests_still_get_an_answer(body):
    answer = complete(request("hi", model="tools", **body))
    assert answer["choices"][0]["finish_reason"] in ("stop", "tool_calls")
    assert isinstance(answer["usage"]["total_tokens"], int)
