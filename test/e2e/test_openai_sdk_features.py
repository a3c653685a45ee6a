"""What users of the official openai SDK do beyond a plain create(): its streaming helper and
structured outputs, several choices, logprobs and refusals, its own retries and timeouts, model ids
with `/` and `:`, per-client options and extra_body. Against the real gateway process
and the fake OpenAI/OpenRouter upstream; every response is schema-checked by the `captured` fixture."""

from __future__ import annotations

import httpx
import openai
import pydantic
import pytest

from aiproxy.testing.fake_openai import HangReply, JSONReply, StreamReply, completion, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY
from aiproxy.testing.recording import RecordingTransport

U = [{"role": "user", "content": "x"}]
BASE = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": "openai/gpt-4o"}
LOGPROBS = {"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
                         "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                                          {"token": "Hey", "logprob": -1.5, "bytes": [72, 101, 121]}]}],
            "refusal": None}


def chunk(*choices) -> dict:
    return {**BASE, "choices": list(choices)}


def choice(index: int = 0, finish: str | None = None, logprobs: dict | None = None, **delta) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


class City(pydantic.BaseModel):
    name: str
    population: int


class GetWeather(pydantic.BaseModel):
    city: str


# --- the streaming helper and structured outputs ---------------------------------------------


def test_stream_helper_events_and_final_completion(client, fake, gateway):
    fake.push(StreamReply(text_chunks(["Hel", "lo"])))
    with client.chat.completions.stream(model="gpt-test", messages=U, stream_options={"include_usage": True},
                                        extra_headers={"X-Request-ID": "sdk-stream-helper"}) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert deltas == ["", "Hel", "lo"]
    assert final.choices[0].message.content == "Hello" and final.choices[0].finish_reason == "stop"
    assert final.usage.completion_tokens == 2
    assert gateway.wait_for_record("sdk-stream-helper")["response"]["choices"][0]["message"]["content"] == "Hello"


def test_parse_with_a_pydantic_model(client, fake):
    fake.push(JSONReply(completion('{"name":"Paris","population":2100000}')))
    reply = client.chat.completions.parse(model="gpt-test", messages=U, response_format=City)
    assert reply.choices[0].message.parsed == City(name="Paris", population=2100000)
    sent = fake.received[0].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"] == {**City.model_json_schema(), "additionalProperties": False}


def test_stream_helper_parses_content_as_it_comes(client, fake):
    pieces = ['{"name":', '"Paris",', '"population":2}']
    fake.push(StreamReply([chunk(choice(role="assistant", content="")), *[chunk(choice(content=p)) for p in pieces],
                           chunk(choice(finish="stop"))]))
    with client.chat.completions.stream(model="gpt-test", messages=U, response_format=City) as stream:
        partial = [event.parsed for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert partial[-1] == {"name": "Paris", "population": 2}
    assert final.choices[0].message.parsed == City(name="Paris", population=2)


def test_stream_helper_tool_call_with_parsed_arguments(client, fake):
    fake.push(StreamReply([
        chunk(choice(role="assistant", content=None)),
        chunk(choice(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                                  "function": {"name": "GetWeather", "arguments": ""}}])),
        chunk(choice(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}])),
        chunk(choice(tool_calls=[{"index": 0, "function": {"arguments": '"Rome"}'}}])),
        chunk(choice(finish="tool_calls")),
    ]))
    tool = openai.pydantic_function_tool(GetWeather)
    with client.chat.completions.stream(model="gpt-test", messages=U, tools=[tool]) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    assert [e.arguments_delta for e in events if e.type == "tool_calls.function.arguments.delta"] == \
        ["", '{"city":', '"Rome"}']
    done = next(e for e in events if e.type == "tool_calls.function.arguments.done")
    assert done.parsed_arguments == GetWeather(city="Rome")
    call = final.choices[0].message.tool_calls[0]
    assert call.id == "call_1" and call.function.parsed_arguments == GetWeather(city="Rome")
    assert final.choices[0].finish_reason == "tool_calls"
    assert fake.received[0].json["tools"] == [tool]


# --- n, logprobs, refusal -------------------------------------------------------------------


def test_two_choices_interleaved_in_a_stream(client, fake, gateway):
    fake.push(StreamReply([
        chunk(choice(0, role="assistant", content=""), choice(1, role="assistant", content="")),
        chunk(choice(1, content="B1")), chunk(choice(0, content="A1")),
        chunk(choice(1, content="B2")), chunk(choice(0, content="A2")),
        chunk(choice(1, finish="stop")), chunk(choice(0, finish="stop")),
    ]))
    with client.chat.completions.stream(model="gpt-test", n=2, messages=U,
                                        extra_headers={"X-Request-ID": "sdk-n2"}) as stream:
        order = [(e.chunk.choices[0].index) for e in stream if e.type == "chunk" and e.chunk.choices][1:5]
        final = stream.get_final_completion()
    assert order == [1, 0, 1, 0]
    assert [(c.index, c.message.content) for c in final.choices] == [(0, "A1A2"), (1, "B1B2")]
    assert fake.received[0].json["n"] == 2
    logged = gateway.wait_for_record("sdk-n2")["response"]["choices"]
    assert [c["message"]["content"] for c in logged] == ["A1A2", "B1B2"]


def test_two_choices_in_a_json_answer(client, fake):
    two = completion("A")
    two["choices"].append({**two["choices"][0], "index": 1, "message": {"role": "assistant", "content": "B",
                                                                         "refusal": None}})
    fake.push(JSONReply(two))
    reply = client.chat.completions.create(model="gpt-test", n=2, messages=U)
    assert [(c.index, c.message.content) for c in reply.choices] == [(0, "A"), (1, "B")]


def test_logprobs_in_a_json_answer(client, fake):
    body = completion("Hi")
    body["choices"][0]["logprobs"] = LOGPROBS
    fake.push(JSONReply(body))
    reply = client.chat.completions.create(model="gpt-test", messages=U, logprobs=True, top_logprobs=2)
    assert reply.choices[0].logprobs.model_dump() == LOGPROBS
    assert fake.received[0].json["logprobs"] is True and fake.received[0].json["top_logprobs"] == 2


def test_logprobs_in_a_stream(client, fake, gateway):
    fake.push(StreamReply([chunk(choice(role="assistant", content="")), chunk(choice(content="Hi", logprobs=LOGPROBS)),
                           chunk(choice(finish="stop"))]))
    with client.chat.completions.stream(model="gpt-test", messages=U, logprobs=True, top_logprobs=2,
                                        extra_headers={"X-Request-ID": "sdk-logprobs"}) as stream:
        streamed = [e.content for e in stream if e.type == "logprobs.content.delta"]
        final = stream.get_final_completion()
    assert [[token.model_dump() for token in piece] for piece in streamed] == [LOGPROBS["content"]]
    assert final.choices[0].logprobs.model_dump() == LOGPROBS
    assert gateway.wait_for_record("sdk-logprobs")["response"]["choices"][0]["logprobs"] == LOGPROBS


def test_refusal_streamed_and_in_a_json_answer(client, fake):
    fake.push(StreamReply([chunk(choice(role="assistant", content=None, refusal="")), chunk(choice(refusal="I can't")),
                           chunk(choice(refusal=" help.")), chunk(choice(finish="stop"))]))
    with client.chat.completions.stream(model="gpt-test", messages=U, response_format=City) as stream:
        deltas = [e.delta for e in stream if e.type == "refusal.delta"]
        final = stream.get_final_completion()
    assert deltas == ["", "I can't", " help."]
    assert final.choices[0].message.refusal == "I can't help." and final.choices[0].message.parsed is None
    body = completion(None)
    body["choices"][0]["message"]["refusal"] = "No."
    fake.push(JSONReply(body))
    reply = client.chat.completions.parse(model="gpt-test", messages=U, response_format=City)
    assert reply.choices[0].message.refusal == "No." and reply.choices[0].message.parsed is None


# --- the SDK's retries ---------------------------------------------------------------------


@pytest.fixture()
def retrying(gateway, captured):
    """A client with the SDK's default retries (max_retries=2); `captured` holds every attempt."""
    with openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=2, timeout=20,
                       http_client=httpx.Client(transport=RecordingTransport(captured))) as sdk:
        yield sdk


def _upstream_error(status: int, headers: dict | None = None, **error) -> JSONReply:
    return JSONReply({"error": {"code": status, "message": "upstream says no", **error}}, status=status,
                     headers=headers or {})


def test_rate_limits_are_retried_as_the_upstream_asks(retrying, fake):
    """retry-after-ms first (the SDK reads it before retry-after), then a fractional retry-after: each
    wait is the upstream's, not the SDK's own backoff (0.5 s, then at most 1 s)."""
    fake.push(_upstream_error(429, {"retry-after-ms": "300", "retry-after": "30"}),
              _upstream_error(429, {"retry-after": "1.5", "x-ratelimit-remaining-requests": "0"}))
    reply = retrying.chat.completions.create(model="gpt-test", messages=U)
    assert reply.choices[0].message.content == "Hello!"
    first, second, third = (item.received_at for item in fake.received)
    assert 0.3 <= second - first < 5 and 1.5 <= third - second < 5


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_provider_without_a_key_is_not_retried(retrying, captured, stream):
    """503 makes the SDK retry, but no retry gives the provider a key: the gateway says so."""
    with pytest.raises(openai.InternalServerError) as err:
        retrying.chat.completions.create(model="nokey-test", messages=U, stream=stream)
    assert err.value.response.headers["x-should-retry"] == "false"
    assert [attempt.status for attempt in captured] == [503]


@pytest.mark.parametrize(("reply", "status"), [
    (_upstream_error(401), 502),  # the upstream rejects the gateway's key
    (_upstream_error(429, type="insufficient_quota", code="insufficient_quota"), 429),  # OpenAI's exhausted quota
    (_upstream_error(500, {"x-should-retry": "false"}), 500),  # the upstream's own word
], ids=["gateway-key-rejected", "insufficient-quota", "upstream-says-no-retry"])
def test_errors_no_retry_can_end_are_not_retried(retrying, fake, reply, status):
    fake.push(reply, JSONReply(completion()))
    with pytest.raises(openai.APIStatusError) as err:
        retrying.chat.completions.create(model="gpt-test", messages=U)
    assert err.value.status_code == status and err.value.response.headers["x-should-retry"] == "false"
    assert len(fake.received) == 1


def test_a_transient_upstream_error_is_still_retried(retrying, fake):
    fake.push(_upstream_error(502), JSONReply(completion("second time")))
    assert retrying.chat.completions.create(model="gpt-test", messages=U).choices[0].message.content == "second time"
    assert len(fake.received) == 2


# --- the SDK's timeout ---------------------------------------------------------------------


def _impatient(gateway, max_retries: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, timeout=0.5, max_retries=max_retries)


def test_a_timeout_cancels_each_attempt_at_the_upstream(gateway, fake):
    fake.push(HangReply(), HangReply())
    with _impatient(gateway, max_retries=1) as sdk, pytest.raises(openai.APITimeoutError):
        sdk.chat.completions.create(model="gpt-test", messages=U, extra_headers={"X-Request-ID": "sdk-timeout"})
    fake.wait_cancelled(count=2)
    assert len(fake.received) == 2
    records = gateway.wait_for_records("sdk-timeout", 2)  # the SDK's retry sends the id the client set
    assert [(r["status_code"], r["error"]["type"]) for r in records] == [(499, "cancelled")] * 2


def test_a_timeout_mid_stream_cancels_the_upstream_and_is_logged_as_cancelled(gateway, fake):
    fake.push(StreamReply(text_chunks(["Hel", "lo"]), per_event=True, delay=5))
    with _impatient(gateway, max_retries=0) as sdk, pytest.raises(openai.APITimeoutError):
        with sdk.chat.completions.stream(model="gpt-test", messages=U,
                                         extra_headers={"X-Request-ID": "sdk-stream-timeout"}) as stream:
            for _ in stream:
                pass
    fake.wait_cancelled()
    record = gateway.wait_for_record("sdk-stream-timeout")
    assert record["status_code"] == 499 and record["error"]["type"] == "cancelled"


# --- models, options, extra_body -----------------------------------------------


@pytest.mark.parametrize("model", ["pattern-openai/gpt-4o:free", "pattern-meta/llama-3:8b:nitro",
                                   "pattern-a%2Fb", "pattern-x?y#z"])
def test_model_ids_with_slashes_and_colons(client, fake, model):
    """The SDK percent-encodes `/` (and `?`, `#`, `%`) in the path; the id comes back as sent."""
    assert client.models.retrieve(model).id == model
    client.chat.completions.create(model=model, messages=U)
    assert fake.received[0].json["model"] == "openai/pattern"


def test_default_headers_extra_body_and_the_request_id(client, fake, gateway):
    tagged = client.with_options(default_headers={"X-Request-ID": "sdk-options-1"})
    raw = tagged.chat.completions.with_raw_response.create(
        model="gpt-test", messages=U,
        extra_body={"provider": {"order": ["openai"], "allow_fallbacks": False}, "transforms": [], "top_k": None})
    assert raw.headers["x-request-id"] == "sdk-options-1" and raw.request_id == "sdk-options-1"
    sent = fake.received[0].json
    assert sent["provider"] == {"order": ["openai"], "allow_fallbacks": False}
    assert sent["transforms"] == [] and sent["top_k"] is None
    assert gateway.wait_for_record("sdk-options-1")["status_code"] == 200
