"""The official openai SDK (sync and async) against the real gateway process and a fake
upstream that speaks OpenAI/OpenRouter's wire format. Every response is schema-checked by the
`captured` fixture."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from aiproxy.testing.fake_openai import JSONReply, RawReply, SSEComment, StreamReply, completion, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_plain_chat_sync(client, fake):
    reply = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello!"
    assert reply.usage.total_tokens == 7
    sent = fake.received[0]
    assert sent.path == "/api/v1/chat/completions"
    assert sent.json == {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert sent.headers["authorization"] == "Bearer sk-or-v1-upstream-secret-9b1d"
    assert sent.headers["x-title"] == "AI Proxy" and sent.headers["http-referer"]


def test_plain_chat_async(async_client, fake):
    async def run():
        async with async_client:
            return await async_client.chat.completions.create(
                model="local-test", messages=[{"role": "user", "content": "hi"}]
            )

    reply = asyncio.run(run())
    assert reply.choices[0].message.content == "Hello!"
    assert fake.received[0].path == "/v1/chat/completions"
    assert fake.received[0].json["model"] == "llama3"


def test_streamed_chat_with_usage(client, fake):
    fake.push(StreamReply(text_chunks(["The", " capital", " is", " Paris."])))
    stream = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "capital?"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital is Paris."
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert fake.received[0].json["stream"] is True



def test_usage_chunk_not_asked_for_stays_at_the_gateway(client, fake, gateway):
    """OpenRouter ends every stream with a usage chunk with no choices, asked for or not; OpenAI sends it
    only for include_usage, and the README's loop (chunk.choices[0] of every chunk) raised IndexError on it."""
    fake.push(StreamReply(text_chunks(["Hello", " there"])))
    with client.chat.completions.with_streaming_response.create(
        model="gpt-test", stream=True, messages=[{"role": "user", "content": "Stream me"}]
    ) as response:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse())
    assert text == "Hello there"
    record = gateway.wait_for_record(response.headers["x-request-id"])
    assert record["response"]["usage"]["completion_tokens"] == 2  # the request log still has it

def test_usage_asked_for_in_openrouters_way_reaches_the_client(client, fake):
    """OpenRouter's own switch for the closing usage chunk (and its `cost`) is `usage: {include: true}`;
    the gateway used to drop the chunk unless `stream_options.include_usage` asked for it too."""
    fake.push(StreamReply(text_chunks(["Hello", " there"])))
    stream = client.chat.completions.create(model="gpt-test", stream=True, messages=[{"role": "user", "content": "hi"}],
                                            extra_body={"usage": {"include": True}})
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2
    assert fake.received[0].json["usage"] == {"include": True}


def test_openrouter_answers_without_a_fingerprint_get_the_seeds(client, fake):
    """The seed gave every OpenRouter answer and chunk a `system_fingerprint` (`fp_openrouter_` + 8 hex);
    many of OpenRouter's backends send none or null. A real one is kept; other providers are untouched."""
    messages = [{"role": "user", "content": "hi"}]
    fake.push(JSONReply(completion(model="openai/gpt-4o", system_fingerprint=None)))
    assert client.chat.completions.create(model="gpt-test", messages=messages).system_fingerprint == "fp_openrouter_abb375db"
    bare = completion(model="openai/gpt-4o")
    del bare["system_fingerprint"]
    fake.push(JSONReply(bare))
    assert client.chat.completions.create(model="gpt-test", messages=messages).system_fingerprint == "fp_openrouter_abb375db"
    fake.push(JSONReply(completion(model="openai/gpt-4o", system_fingerprint="fp_real_1")))
    assert client.chat.completions.create(model="gpt-test", messages=messages).system_fingerprint == "fp_real_1"
    events = [{k: v for k, v in chunk.items() if k != "system_fingerprint"} for chunk in text_chunks(["a", "b"])]
    events[1]["system_fingerprint"] = "fp_real_2"
    fake.push(StreamReply(events))
    chunks = list(client.chat.completions.create(model="gpt-test", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert [c.system_fingerprint for c in chunks] == ["fp_openrouter_abb375db", "fp_real_2", *["fp_openrouter_abb375db"] * 3]
    fake.push(JSONReply({**bare, "model": "llama3"}))
    assert client.chat.completions.create(model="local-test", messages=messages).system_fingerprint is None


def test_openrouter_keepalive_comments_are_invisible_to_the_sdk(client, fake):
    processing = SSEComment("OPENROUTER PROCESSING")
    fake.push(StreamReply([processing, *text_chunks(["Still"], usage=False), processing,
                           *text_chunks([" here"], usage=False)[1:]], per_event=True))
    stream = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "Still here"


def test_async_stream(async_client, fake):
    async def run():
        async with async_client:
            stream = await async_client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(run())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from upstream"


def test_tool_call_round_trip(client, fake):
    call = {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    first = completion(choices=[{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call],
                                                          "refusal": None},
                                 "logprobs": None, "finish_reason": "tool_calls"}])
    fake.push(JSONReply(first), JSONReply(completion("It is sunny in Paris.")))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    reply = client.chat.completions.create(model="gpt-test", messages=messages, tools=[WEATHER_TOOL],
                                           tool_choice="auto")
    assert reply.choices[0].finish_reason == "tool_calls"
    tool_call = reply.choices[0].message.tool_calls[0]
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [tool_call.model_dump()]},
        {"role": "tool", "tool_call_id": tool_call.id, "content": '{"sky":"sunny"}'},
    ]
    final = client.chat.completions.create(model="gpt-test", messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "It is sunny in Paris."
    second = fake.received[1].json
    assert second["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert second["messages"][2] == {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky":"sunny"}'}
    assert second["tools"] == [WEATHER_TOOL]


def test_streamed_tool_call_deltas(client, fake):
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                                     "function": {"name": "get_weather", "arguments": ""}}]},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]},
                              "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    fake.push(StreamReply(events))
    chunks = list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "w"}],
                                                 tools=[WEATHER_TOOL], stream=True))
    args = "".join(tc.function.arguments or "" for c in chunks for tc in (c.choices[0].delta.tool_calls or []))
    assert json.loads(args) == {"city": "Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_image_parts_reach_upstream_unchanged(client, fake):
    content = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": content}])
    assert fake.received[0].json["messages"][0]["content"] == content


def test_response_format_json_schema(client, fake):
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
        "additionalProperties": False}}}
    fake.push(JSONReply(completion('{"name":"Paris"}')))
    reply = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "city"}],
                                           response_format=fmt)
    assert json.loads(reply.choices[0].message.content) == {"name": "Paris"}
    assert fake.received[0].json["response_format"] == fmt


def test_mock_provider_works_without_upstream(client):
    reply = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "ping"}])
    assert reply.choices[0].message.content == "ping"
    tools = client.chat.completions.create(model="mock-tools", messages=[{"role": "user", "content": "x"}],
                                           tools=[WEATHER_TOOL])
    assert tools.choices[0].message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize("name", [5, {"a": [1]}, ""])
def test_the_mock_calls_a_tool_without_a_string_name_tool(client, name):
    """Was an answer whose call was named 5 (or an object): no client's schema takes that (the
    `captured` fixture checks it against OpenAI's)."""
    tool = {"type": "function", "function": {"name": name}}
    reply = client.chat.completions.create(model="mock-tools", messages=[{"role": "user", "content": "x"}], tools=[tool])
    assert reply.choices[0].message.tool_calls[0].function.name == "tool"


def test_models_list_and_get(client):
    ids = {m.id: m.owned_by for m in client.models.list()}
    assert ids["gpt-test"] == "openrouter" and ids["mock"] == "mock"
    assert not any("*" in name for name in ids)
    assert client.models.retrieve("gpt-test").owned_by == "openrouter"
    # Whatever a chat request may name: a differently cased alias (as configured), a pattern's match.
    assert client.models.retrieve("GPT-Test").id == "gpt-test"
    assert client.models.retrieve("Pattern-X").model_dump(exclude_unset=True) == {
        "id": "Pattern-X", "object": "model", "created": 1677610602, "owned_by": "openrouter",
        "permission": [], "root": "Pattern-X", "parent": None,  # the earlier version's fields
    }
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# --- errors as the SDK's typed exceptions ------------------------------------------------------


def test_bad_key_is_authentication_error(gateway, captured):
    import httpx

    from aiproxy.testing.recording import RecordingTransport

    bad = openai.OpenAI(base_url=gateway.base_url, api_key="wrong", max_retries=0,
                        http_client=httpx.Client(transport=RecordingTransport(captured)))
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 401
    assert err.value.response.headers["www-authenticate"].startswith("Bearer")
    assert err.value.body["code"] == "invalid_api_key"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"


def test_empty_messages_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-test", messages=[])
    assert err.value.body["param"] == "messages"


def test_rate_limit_carries_retry_after(client, fake):
    fake.push(JSONReply({"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min",
                                   "metadata": {"error_type": "rate_limit_exceeded"}}}, status=429,
                        headers={"Retry-After": "7", "X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0"}))
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    headers = err.value.response.headers
    assert headers["retry-after"] == "7" and headers["x-ratelimit-remaining"] == "0"
    assert err.value.body["message"].startswith("Rate limit exceeded")
    assert err.value.body["code"] == "rate_limit_exceeded" and err.value.body["type"] == "rate_limit_error"


def test_upstream_5xx_keeps_status(client, fake):
    fake.push(JSONReply({"error": {"code": 502, "message": "Provider returned error"}}, status=502))
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502 and err.value.body["message"] == "Provider returned error"


def test_upstream_rejecting_gateway_key_is_not_401(client, fake):
    fake.push(JSONReply({"error": {"code": 401, "message": "User not found."}}, status=401))
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    assert "OPENROUTER_API_KEY" in err.value.body["message"]


def test_provider_without_key_is_503_naming_the_variable(client):
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="nokey-test", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 503 and "OPENAI_API_KEY" in err.value.body["message"]


def test_non_json_upstream_body_is_502(client, fake):
    fake.push(RawReply(b"<html>oops</html>", content_type="text/html"))
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502


def test_mid_stream_error_chunk_becomes_error_frame(client, fake):
    events = text_chunks(["partial"], usage=False)[:2]
    events.append({"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "provider": "OpenAI",
                   "error": {"code": 429, "message": 'Rate "limit" exceeded', "metadata": {"error_type": "rate_limit_exceeded"}},
                   "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})
    fake.push(StreamReply(events))
    stream = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk)
    assert received[1].choices[0].delta.content == "partial"
    assert 'Rate "limit" exceeded' in err.value.message


def test_stream_error_before_first_token_keeps_http_status(client, fake):
    fake.push(JSONReply({"error": {"code": 503, "message": "No endpoints found"}}, status=503,
                        headers={"Retry-After": "3"}))
    with pytest.raises(openai.InternalServerError) as err:
        list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True))
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "3"



def test_stream_failing_in_its_first_event_keeps_status_and_retry_after(client, fake):
    """OpenRouter's error chunk before any token: the client gets its HTTP status and the stream's
    retry hints, as for the same error answered as an HTTP status."""
    error = {"code": 429, "message": "Rate limit exceeded", "metadata": {"error_type": "rate_limit_exceeded"}}
    fake.push(StreamReply([{**text_chunks([], usage=False)[0], "error": error}],
                          headers={"Retry-After": "9", "X-RateLimit-Remaining": "0"}))
    with pytest.raises(openai.RateLimitError) as err:
        list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True))
    headers = err.value.response.headers
    assert headers["retry-after"] == "9" and headers["x-ratelimit-remaining"] == "0"
    assert err.value.body["code"] == "rate_limit_exceeded"

def test_mock_error_directive(client):
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "[mock:error=429]"}])
    assert err.value.response.headers["retry-after"] == "1"


def test_client_key_constant(client):
    assert client.api_key == CLIENT_KEY
