"""GeminiProvider against the fake Gemini server over real HTTP on 127.0.0.1: the exact request
Gemini receives and the exact OpenAI body the gateway hands on."""

import time
from unittest.mock import ANY

import anyio
import orjson
import pytest

from aiproxy.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamStreamTruncated,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from aiproxy.providers.base import UpstreamRequest
from aiproxy.providers.gemini import GeminiProvider
from aiproxy.providers.gemini_ids import new_tool_call_id
from aiproxy.testing.fake_gemini import (
    DEFAULT_KEY,
    FakeGemini,
    JsonReply,
    StreamReply,
    blocked_prompt,
    candidate,
    error_reply,
    function_call_response,
    rate_limited,
    response,
    text_response,
    text_stream,
    usage_metadata,
)

pytestmark = pytest.mark.anyio
MODEL = "gemini-2.5-flash"
USAGE = {
    "prompt_tokens": 4,
    "completion_tokens": 2,
    "total_tokens": 6,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def req(**body):
    return UpstreamRequest(body={"model": MODEL, **body}, request_id="req-1")


def user(text):
    return {"role": "user", "content": text}


async def collect(stream):
    return [chunk async for batch in stream for chunk in batch]


def deltas(chunks):
    return [
        (c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
        if c["choices"]
        else ("usage", c["usage"])
        for c in chunks
    ]


async def test_plain_completion(fake, provider):
    fake.enqueue(text_response("Hello!", usage=usage_metadata(4, 2)))
    result = await provider.complete(
        req(messages=[{"role": "system", "content": "Be brief."}, user("Hi")], temperature=0.5, user="u-1")
    )

    sent = fake.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.query == {}
    assert sent.headers["x-goog-api-key"] == DEFAULT_KEY
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.5},
    }
    assert result.body == {
        "id": ANY,
        "object": "chat.completion",
        "created": ANY,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
        "system_fingerprint": "fp_gemini_de40daba",  # the seed's prefix, 8 hex digits of SHA-256(model)
    }


async def test_streamed_completion(fake, provider):
    fake.enqueue(text_stream(["Hel", "lo ", "world"], prompt_tokens=4))
    stream = await provider.open_stream(
        req(messages=[user("Hi")], stream=True, stream_options={"include_usage": True})
    )
    chunks = await collect(stream)

    sent = fake.requests[-1]
    assert (sent.path, sent.query) == (f"/v1beta/models/{MODEL}:streamGenerateContent", {"alt": "sse"})
    assert sent.json == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo "}, None),
        ({"content": "world"}, None),
        ({}, "stop"),
        ("usage", {**USAGE, "completion_tokens": 3, "total_tokens": 7}),
    ]
    assert len({c["id"] for c in chunks}) == 1


async def test_events_split_at_arbitrary_bytes_are_reassembled(fake, provider):
    pieces = text_stream(["Grüße ", "aus ", "Köln 🎉"])
    pieces.split = 7  # cuts inside "data:", inside UTF-8 sequences and between \r and \n
    fake.enqueue(pieces)
    chunks = await collect(await provider.open_stream(req(messages=[user("Hi")], stream=True)))
    assert [d for d, _ in deltas(chunks)] == [
        {"role": "assistant", "content": ""},
        {"content": "Grüße "},
        {"content": "aus "},
        {"content": "Köln 🎉"},
        {},
    ]


async def test_n_candidates_become_n_choices(fake, provider):
    fake.enqueue(
        response(
            [candidate([{"text": "A"}], index=0), candidate([{"text": "B"}], "MAX_TOKENS", index=1)],
            usage_metadata(3, 2),
        )
    )
    result = await provider.complete(req(messages=[user("x")], n=2))
    assert fake.last_json["generationConfig"] == {"candidateCount": 2}
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in result.body["choices"]] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]


async def test_every_supported_parameter_is_a_field_gemini_accepts(fake, provider):
    """A request using everything the translation knows passes the fake's proto field check."""
    await provider.complete(
        req(
            messages=[
                {"role": "developer", "content": "Be exact."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                        {
                            "type": "file",
                            "file": {
                                "filename": "a.pdf",
                                "file_data": "data:application/pdf;base64,JVBERi0=",
                            },
                        },
                    ],
                },
            ],
            tools=[WEATHER],
            tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [WEATHER]}},
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            temperature=0.1,
            top_p=0.5,
            top_k=3,
            n=1,
            seed=2**40,
            presence_penalty=0.1,
            frequency_penalty=0.2,
            logprobs=True,
            top_logprobs=2,
            max_completion_tokens=64,
            stop=["END"],
            reasoning_effort="low",
            user="u",
            metadata={"a": "b"},
            parallel_tool_calls=True,
            stream_options={"include_usage": True},
        )
    )
    assert set(fake.last_json["generationConfig"]) == {
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "maxOutputTokens",
        "stopSequences",
        "responseMimeType",
        "responseJsonSchema",
        "thinkingConfig",
    }


async def test_default_echo_answers_without_a_script(fake, provider):
    result = await provider.complete(req(messages=[user("ping")]))
    assert result.body["choices"][0]["message"]["content"] == "echo: ping"
    chunks = await collect(await provider.open_stream(req(messages=[user("ping")], stream=True)))
    assert "".join(d.get("content", "") for d, _ in deltas(chunks)) == "echo: ping"


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_tool_call_round_trip_keeps_the_thought_signature(gemini_settings, streamed):
    async with FakeGemini(require_thought_signatures=True) as fake:
        provider = GeminiProvider(gemini_settings(fake))
        fake.enqueue(
            function_call_response(
                ("get_weather", {"city": "Paris"}),
                ("get_weather", {"city": "Rome"}),
                thought_signature="c2lnbmF0dXJlLTE=",
            )
        )
        fake.enqueue(text_response("Paris is warmer."))
        messages = [user("Paris or Rome?")]
        first = req(messages=messages, tools=[WEATHER], tool_choice="auto", stream=streamed)
        if streamed:
            chunks = await collect(await provider.open_stream(first))
            calls = [d["tool_calls"][0] for d, _ in deltas(chunks) if "tool_calls" in d]
            assert [c["index"] for c in calls] == [0, 1]
            assert deltas(chunks)[-1] == ({}, "tool_calls")
            for call in calls:
                del call["index"]
        else:
            message = (await provider.complete(first)).body["choices"][0]["message"]
            calls = message["tool_calls"]
            assert message["content"] is None
        assert [c["function"] for c in calls] == [
            {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"name": "get_weather", "arguments": '{"city":"Rome"}'},
        ]
        messages += [
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 24}'},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": '{"temp": 19}'},
        ]
        answer = await provider.complete(req(messages=messages, tools=[WEATHER]))
        assert answer.body["choices"][0]["message"]["content"] == "Paris is warmer."
        assert fake.last_json["contents"][1:] == [
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "c2lnbmF0dXJlLTE=",
                    },
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 24}}},
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 19}}},
                ],
            },
        ]
        assert fake.last_json["tools"] == [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather",
                        "parametersJsonSchema": WEATHER["function"]["parameters"],
                    }
                ]
            }
        ]
        await provider.aclose()


async def test_a_dropped_signature_is_what_gemini_3_rejects(gemini_settings):
    """The fake enforces signatures like Gemini 3: a forged one gets the real 400 through to the client."""
    async with FakeGemini(require_thought_signatures=True) as fake:
        provider = GeminiProvider(gemini_settings(fake))
        forged = new_tool_call_id("bm90LWlzc3VlZA==")
        messages = [
            user("x"),
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": forged, "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": forged, "content": "1"},
        ]
        with pytest.raises(UpstreamError) as error:
            await provider.complete(req(messages=messages))
        assert error.value.http_status == 400
        assert error.value.message.startswith("Function call is missing a thought_signature")
        await provider.aclose()


async def test_json_schema_output(fake, provider):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fake.enqueue(text_response('{"city": "Paris"}'))
    result = await provider.complete(
        req(
            messages=[user("Capital of France?")],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "strict": True, "schema": schema},
            },
        )
    )
    assert fake.last_json["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    assert orjson.loads(result.body["choices"][0]["message"]["content"]) == {"city": "Paris"}


async def test_image_is_sent_inline(fake, provider):
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    await provider.complete(
        req(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    ],
                }
            ]
        )
    )
    assert fake.last_json["contents"] == [
        {
            "role": "user",
            "parts": [{"text": "Describe"}, {"inlineData": {"mimeType": "image/png", "data": png}}],
        }
    ]


async def test_gemini_400_reaches_the_client_as_a_400(fake, provider):
    with pytest.raises(UpstreamError) as error:
        await provider.complete(
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,@@not-base64@@"},
                            }
                        ],
                    }
                ]
            )
        )
    assert error.value.http_status == 400
    assert error.value.to_body()["error"]["type"] == "invalid_request_error"
    assert "Base64 decoding failed" in error.value.message


async def test_safety_block(fake, provider):
    fake.enqueue(blocked_prompt(), blocked_prompt())
    result = await provider.complete(req(messages=[user("something dangerous")]))
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"].startswith("Gemini blocked this prompt")
    chunks = await collect(await provider.open_stream(req(messages=[user("again")], stream=True)))
    assert deltas(chunks)[-1] == ({}, "content_filter")


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_rate_limit(fake, provider, streamed):
    fake.enqueue(rate_limited("7s"))
    with pytest.raises(UpstreamError) as error:
        if streamed:
            await provider.open_stream(req(messages=[user("x")], stream=True))
        else:
            await provider.complete(req(messages=[user("x")]))
    assert error.value.http_status == 429
    assert error.value.code == "rate_limit_exceeded"
    assert error.value.headers == {"retry-after": "7", "retry-after-ms": "7000"}


@pytest.mark.parametrize("key", ["wrong-key", ""], ids=["rejected", "missing"])
async def test_rejected_or_missing_key_is_an_operator_error(fake, gemini_settings, key):
    provider = GeminiProvider(gemini_settings(fake, api_key=key))
    with pytest.raises(UpstreamMisconfigured) as error:
        await provider.complete(req(messages=[user("x")]))
    assert error.value.http_status == 502
    assert "Check GEMINI_API_KEY" in error.value.message
    await provider.aclose()


def suspended_key_reply():
    """Google's real answer for a suspended key quotes the key itself (google/generative-ai-docs#356)."""
    message = f"Permission denied: Consumer 'api_key:{DEFAULT_KEY}' has been suspended."
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONSUMER_SUSPENDED",
            "metadata": {"containerInfo": f"api_key:{DEFAULT_KEY}"}}
    return error_reply(403, "PERMISSION_DENIED", message, [info])


async def test_an_error_quoting_the_gateways_key_never_repeats_it(fake, provider):
    fake.enqueue(suspended_key_reply())
    with pytest.raises(UpstreamMisconfigured) as refused:
        await provider.complete(req(messages=[user("x")]))
    fake.enqueue(StreamReply([response([candidate([{"text": "par"}], None)]), suspended_key_reply().body]))
    stream = await provider.open_stream(req(messages=[user("x")], stream=True))
    with pytest.raises(UpstreamMisconfigured) as mid_stream:
        await collect(stream)
    for error in (refused.value, mid_stream.value):
        assert DEFAULT_KEY not in error.message
        assert "Consumer 'api_key:[redacted]' has been suspended" in error.message


async def test_base_url_may_carry_the_version_path(fake, gemini_settings):
    provider = GeminiProvider(gemini_settings(fake, base_url=fake.base_url + "/v1beta/"))
    await provider.complete(req(messages=[user("x")]))
    await provider.aclose()
    assert fake.requests[-1].path == f"/v1beta/models/{MODEL}:generateContent"


async def test_a_tuned_model_is_called_under_tuned_models(fake, provider):
    await provider.complete(UpstreamRequest(body={"model": "tunedModels/my-tuned-abc", "messages": [user("x")]},
                                            request_id="req-1"))
    assert fake.requests[-1].path == "/v1beta/tunedModels/my-tuned-abc:generateContent"


async def test_unknown_model_is_a_404_model_not_found(gemini_settings):
    async with FakeGemini(models={"gemini-2.5-pro"}) as fake:
        provider = GeminiProvider(gemini_settings(fake))
        with pytest.raises(UpstreamError) as error:
            await provider.complete(req(messages=[user("x")]))
        await provider.aclose()
    assert (error.value.http_status, error.value.code) == (404, "model_not_found")
    assert error.value.message.startswith(f"models/{MODEL} is not found for API version v1beta")


async def test_unavailable_and_mid_stream_error_event(fake, provider):
    fake.enqueue(error_reply(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))
    with pytest.raises(UpstreamError) as error:
        await provider.complete(req(messages=[user("x")]))
    assert (error.value.http_status, error.value.message) == (
        503,
        "The model is overloaded. Please try again later.",
    )

    fake.enqueue(
        StreamReply(
            [
                {"candidates": [{"content": {"role": "model", "parts": [{"text": "par"}]}, "index": 0}]},
                {"error": {"code": 503, "message": "overloaded mid-way", "status": "UNAVAILABLE"}},
            ]
        )
    )
    stream = await provider.open_stream(req(messages=[user("x")], stream=True))
    got = []
    with pytest.raises(UpstreamError) as error:
        async for batch in stream:
            got += batch
    assert [d for d, _ in deltas(got)] == [{"role": "assistant", "content": ""}, {"content": "par"}]
    assert (error.value.http_status, error.value.message) == (503, "overloaded mid-way")


async def test_truncated_stream_and_stream_without_finish(fake, provider):
    cut = text_stream(["one ", "two"])
    cut.events[-1]["candidates"][0].pop("finishReason")
    cut.cut = True
    stream = await provider.open_stream(req(messages=[user("x")], stream=True))  # default echo first
    await collect(stream)
    fake.enqueue(cut)
    with pytest.raises(UpstreamUnreachable, match="broke before the answer was finished"):
        await collect(await provider.open_stream(req(messages=[user("x")], stream=True)))

    unfinished = text_stream(["one"])
    unfinished.events[-1]["candidates"][0].pop("finishReason")
    fake.enqueue(unfinished)
    with pytest.raises(UpstreamStreamTruncated, match="ended before the answer was finished"):
        await collect(await provider.open_stream(req(messages=[user("x")], stream=True)))


@pytest.mark.parametrize(
    "answer",
    [{"candidates": 5}, {"candidates": ["s"]}, {"candidates": [{"content": {"parts": "x"}}]},
     {"candidates": [{"content": {"parts": [{"functionCall": None}]}}]},
     {"candidates": [{"content": {"parts": [{"text": "a"}]},
                     "logprobsResult": {"topCandidates": 5, "chosenCandidates": [{"token": "a"}]}}]}],
    ids=["candidates-int", "candidate-str", "parts-str", "call-null", "logprobs-int"],
)
async def test_answers_of_another_shape_are_a_bad_upstream_response(fake, provider, answer):
    """Not the gateway's internal error (a 500): the client gets a 502 that names the upstream."""
    fake.enqueue(JsonReply(answer))
    with pytest.raises(UpstreamBadResponse, match="cannot read"):
        await provider.complete(req(messages=[user("x")]))
    fake.enqueue(StreamReply([answer]))
    with pytest.raises(UpstreamBadResponse, match="cannot read"):
        await collect(await provider.open_stream(req(messages=[user("x")], stream=True)))


async def test_timeouts(fake, gemini_settings):
    provider = GeminiProvider(gemini_settings(fake, read_timeout=0.2))
    fake.enqueue(JsonReply(text_response("late"), delay=1.0))
    with pytest.raises(UpstreamTimeout):
        await provider.complete(req(messages=[user("x")]))
    slow = text_stream(["a", "b"])
    slow.delay = 0.5
    fake.enqueue(slow)
    with pytest.raises(UpstreamTimeout):
        await collect(await provider.open_stream(req(messages=[user("x")], stream=True)))
    await provider.aclose()


async def test_unreachable(gemini_settings):
    async with FakeGemini() as fake:
        settings = gemini_settings(fake)
    provider = GeminiProvider(settings)  # the port is closed now
    with pytest.raises(UpstreamUnreachable):
        await provider.complete(req(messages=[user("x")]))
    await provider.aclose()


async def test_aclose_stops_a_running_stream_promptly(fake, provider):
    slow = text_stream([f"w{i} " for i in range(20)])
    slow.delay = 0.3
    fake.enqueue(slow)
    stream = await provider.open_stream(req(messages=[user("x")], stream=True))
    iterator = aiter(stream)
    assert (await anext(iterator))[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    started = time.perf_counter()
    await stream.aclose()
    await iterator.aclose()
    assert time.perf_counter() - started < 0.2
    for _ in range(150):  # the fake notices at its next write (every 0.3 s)
        if fake.requests[-1].cancelled:
            break
        await anyio.sleep(0.02)
    assert fake.requests[-1].cancelled  # the fake saw the connection go away


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_an_endless_error_body_is_read_only_in_part(gemini_settings, streamed):
    """A huge error page (a proxy's, or a broken upstream's) is read up to a bound: it filled the
    gateway's memory, and an endless one held a non-streamed call until the read timeout."""
    from types import SimpleNamespace

    from aiohttp import web

    async def endless(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(status=503, headers={"content-type": "application/json"})
        await answer.prepare(request)
        await answer.write(b'{"error": {"message": "')
        while True:
            await answer.write(b"x" * 65536)

    app = web.Application()
    app.router.add_post("/{tail:.*}", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    gemini = GeminiProvider(gemini_settings(SimpleNamespace(base_url=f"http://127.0.0.1:{port}"), read_timeout=60))
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            if streamed:
                await gemini.open_stream(req(messages=[user("hi")], stream=True))
            else:
                await gemini.complete(req(messages=[user("hi")]))
        assert caught.value.http_status == 503 and time.monotonic() - started < 10
    finally:
        await gemini.aclose()
        await runner.cleanup()
