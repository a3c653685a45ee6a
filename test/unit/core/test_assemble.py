"""aiproxy.chat.assemble.StreamAssembler: chunks in, the chat.completion they amount to out."""

from __future__ import annotations

import os

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from aiproxy.chat.assemble import StreamAssembler

ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o",
            "system_fingerprint": "fp_1"}


def chunk(choices, **extra) -> dict:
    return {**ENVELOPE, "choices": choices, **extra}


def delta(index=0, finish=None, **fields) -> dict:
    return {"index": index, "delta": fields, "logprobs": None, "finish_reason": finish}


def assemble(chunks) -> dict:
    assembler = StreamAssembler()
    for item in chunks:
        assembler.add(item)
    return assembler.result()


def test_text_stream():
    body = assemble([
        chunk([delta(role="assistant", content="")], usage=None),
        chunk([delta(content="Hel")], usage=None),
        chunk([delta(content="lo, ")], usage=None),
        chunk([delta(content="world")], usage=None),
        chunk([delta(finish="stop")], usage=None),
    ])
    assert body == {
        "object": "chat.completion",
        "id": "chatcmpl-1",
        "created": 1700000000,
        "model": "gpt-4o",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"}, "finish_reason": "stop"}],
    }


def test_usage_chunk_with_no_choices():
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "cost": 0.0001}
    body = assemble([
        chunk([delta(role="assistant", content="Hi")], usage=None),
        chunk([delta(finish="stop")], usage=None),
        chunk([], usage=usage),
    ])
    assert body["usage"] == usage
    assert body["choices"][0]["message"]["content"] == "Hi"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_no_usage_key_when_the_stream_had_none():
    assert "usage" not in assemble([chunk([delta(content="x", finish="stop")], usage=None)])


def test_parallel_tool_calls_by_index_with_arguments_concatenated():
    body = assemble([
        chunk([delta(role="assistant", content=None)]),
        chunk([delta(tool_calls=[{"index": 0, "id": "call_a", "type": "function",
                                  "function": {"name": "get_weather", "arguments": ""}}])]),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": "{\"city\":"}}])]),
        chunk([delta(tool_calls=[{"index": 1, "id": "call_b", "type": "function",
                                  "function": {"name": "get_time", "arguments": "{\"tz\""}}])]),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": " \"Paris\"}"}},
                                 {"index": 1, "function": {"arguments": ": \"CET\"}"}}])]),
        chunk([delta(finish="tool_calls")]),
    ])
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\": \"CET\"}"}},
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_calls_are_ordered_by_index_not_arrival():
    body = assemble([
        chunk([delta(tool_calls=[{"index": 1, "id": "second", "function": {"name": "b", "arguments": "{}"}}])]),
        chunk([delta(tool_calls=[{"index": 0, "id": "first", "function": {"name": "a", "arguments": "{}"}}])]),
    ])
    assert [c["id"] for c in body["choices"][0]["message"]["tool_calls"]] == ["first", "second"]


def test_n_greater_than_one_interleaved_choices():
    body = assemble([
        chunk([delta(0, role="assistant", content=""), delta(1, role="assistant", content="")]),
        chunk([delta(1, content="B1 ")]),
        chunk([delta(0, content="A1 ")]),
        chunk([delta(0, content="A2"), delta(1, content="B2")]),
        chunk([delta(1, finish="length")]),
        chunk([delta(0, finish="stop")]),
        chunk([], usage={"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}),
    ])
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["message"]["content"] == "A1 A2"
    assert body["choices"][1]["message"]["content"] == "B1 B2"
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert body["usage"]["total_tokens"] == 5


def test_refusal_is_assembled():
    body = assemble([chunk([delta(role="assistant", refusal="I can't ")]), chunk([delta(refusal="help.", finish="stop")])])
    message = body["choices"][0]["message"]
    assert message["refusal"] == "I can't help." and message["content"] is None


def test_images_are_assembled_in_arrival_order():
    first = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    second = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}
    body = assemble([
        chunk([delta(role="assistant", content="Here:")]),
        chunk([delta(images=[first])]),
        chunk([delta(content=" done", images=[second, "not an image entry"])]),
        chunk([delta(finish="stop")]),
    ])
    # The upstream's entries as they came, as the same answer's JSON body would be logged.
    images = [first, second, "not an image entry"]
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Here: done", "images": images}
    assert "images" not in assemble([chunk([delta(content="x", images=[])])])["choices"][0]["message"]


def test_null_deltas_and_openrouter_extras_are_tolerated():
    body = assemble([
        chunk([{"index": 0, "delta": None, "finish_reason": None, "native_finish_reason": None}], provider="X"),
        chunk([{"index": 0, "delta": {"content": "ok", "reasoning": "r"}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop", "native_finish_reason": "STOP"}]),
        {"id": "chatcmpl-1", "choices": None},
    ])
    assert body["choices"][0]["message"]["content"] == "ok"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_envelope_comes_from_the_first_chunk():
    body = assemble([chunk([delta(content="a")]), {**chunk([delta(content="b")]), "id": "other", "model": "x"}])
    assert body["id"] == "chatcmpl-1" and body["model"] == "gpt-4o"


def test_empty_stream():
    assert assemble([]) == {"object": "chat.completion", "choices": []}


# --- robustness: the assembler only feeds the request log; no upstream chunk may break the stream ---

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def maybe(good):
    return st.one_of(good, good, JSON)


TOOL_DELTA = st.fixed_dictionaries({}, optional={
    "index": maybe(st.integers(0, 3)), "id": maybe(st.text(max_size=4)),
    "function": maybe(st.fixed_dictionaries({}, optional={"name": maybe(st.text(max_size=4)),
                                                          "arguments": maybe(st.text(max_size=4))}))})
CHOICE = st.fixed_dictionaries({}, optional={
    "index": maybe(st.integers(0, 2)),
    "delta": maybe(st.fixed_dictionaries({}, optional={"content": maybe(st.text(max_size=4)),
                                                       "refusal": maybe(st.text(max_size=4)),
                                                       "images": maybe(st.lists(JSON, max_size=2)),
                                                       "tool_calls": maybe(st.lists(maybe(TOOL_DELTA), max_size=3))})),
    "finish_reason": maybe(st.sampled_from(["stop", "length", "tool_calls"])),
})
CHUNK = st.fixed_dictionaries({}, optional={"id": JSON, "model": JSON, "choices": maybe(st.lists(maybe(CHOICE), max_size=3)),
                                            "usage": maybe(st.fixed_dictionaries({"total_tokens": st.integers(0, 9)}))})


@settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "60")), deadline=None, database=None)
@given(st.lists(CHUNK, max_size=6))
def test_property_no_chunk_sequence_makes_the_assembler_raise(chunks):
    body = assemble(chunks)
    assert body["object"] == "chat.completion"
    assert [c["index"] for c in body["choices"]] == sorted({c["index"] for c in body["choices"]})
    for choice in body["choices"]:
        # text, or the parts it was streamed as (a list: none when no part came)
        content = choice["message"]["content"]
        assert content is None or isinstance(content, str) or (isinstance(content, list) and content)
        for call in choice["message"].get("tool_calls", ()):
            assert isinstance(call["function"]["name"], str) and isinstance(call["function"]["arguments"], str)


def test_malformed_deltas_are_skipped_but_finish_reason_is_kept():
    body = assemble([
        chunk([{"index": 0, "delta": "not an object"}]),
        chunk([{"index": None, "delta": {"content": "a", "tool_calls": [
            {"index": None, "function": "f"}, {"index": 0, "function": {"name": 5, "arguments": ["x"]}}]}}]),
        chunk([{"index": 0, "delta": None, "finish_reason": "stop"}]),
        {"choices": {"index": 0}},
    ])
    (choice,) = body["choices"]
    assert choice["message"]["content"] == "a"
    assert choice["finish_reason"] == "stop"


def test_openrouter_reasoning_citations_and_provider_are_kept():
    """Was: a streamed answer's request log lost what a JSON answer's keeps: OpenRouter's `reasoning`
    text and `reasoning_details`, `annotations` (web search citations), `provider` and
    `native_finish_reason`."""
    citation = {"type": "url_citation", "url_citation": {"url": "https://x", "title": "t", "start_index": 0,
                                                         "end_index": 2}}
    body = assemble([
        chunk([delta(role="assistant", content="", reasoning="Let me ")], provider="OpenAI"),
        chunk([delta(reasoning="think.", reasoning_details=[{"type": "reasoning.text", "text": "Let me think."}])],
              provider="OpenAI"),
        chunk([delta(content="Hi", annotations=[citation])], provider="OpenAI"),
        chunk([{**delta(finish="stop"), "native_finish_reason": "end_turn"}], provider="OpenAI"),
    ])
    assert body["provider"] == "OpenAI"
    assert body["choices"] == [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hi", "reasoning": "Let me think.",
                    "reasoning_details": [{"type": "reasoning.text", "text": "Let me think."}],
                    "annotations": [citation]},
        "finish_reason": "stop", "native_finish_reason": "end_turn",
    }]


def test_logprobs_deprecated_function_call_and_service_tier_are_kept():
    """Was: a streamed answer's request log lost what the same JSON answer's keeps: each choice's
    `logprobs` (asked for with `logprobs: true`), a deprecated `functions` call streamed in
    `delta.function_call`, and the `service_tier` that served it."""
    hi = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    bang = {"token": "!", "logprob": -0.5, "bytes": [33], "top_logprobs": []}
    no = {"token": "No", "logprob": -0.2, "bytes": [78, 111], "top_logprobs": []}
    body = assemble([
        chunk([delta(0, role="assistant", content=""), delta(1, role="assistant", content=None)],
              service_tier="default"),
        chunk([{**delta(0, content="Hi"), "logprobs": {"content": [hi], "refusal": None}}], service_tier="default"),
        chunk([{**delta(1, refusal="No"), "logprobs": {"content": None, "refusal": [no]}}], service_tier="default"),
        chunk([{**delta(0, content="!", finish="stop"), "logprobs": {"content": [bang], "refusal": None}},
               delta(1, finish="stop")], service_tier="default"),
    ])
    assert body["service_tier"] == "default"
    assert body["choices"][0]["logprobs"] == {"content": [hi, bang], "refusal": None}
    assert body["choices"][1]["logprobs"] == {"content": None, "refusal": [no]}

    call = assemble([
        chunk([delta(role="assistant", content=None, function_call={"name": "get_weather", "arguments": ""})]),
        chunk([delta(function_call={"arguments": '{"city":'})]),
        chunk([delta(function_call={"arguments": ' "Oslo"}'})]),
        chunk([delta(finish="function_call")]),
    ])
    assert call["choices"][0]["message"]["function_call"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert "logprobs" not in call["choices"][0]  # none was streamed: as before


def test_streamed_audio_is_assembled():
    """Was: a streamed spoken answer (`modalities: ["text", "audio"]`) was logged with no trace of its
    audio: `delta.audio` brings the id, then pieces of the transcript and of the base64 data."""
    body = assemble([
        chunk([delta(role="assistant", content=None, audio={"id": "audio_1", "transcript": "Hel"})]),
        chunk([delta(audio={"transcript": "lo"})]),
        chunk([delta(audio={"data": "UklG"})]),
        chunk([delta(audio={"data": "Rg==", "expires_at": 1700003600})]),
        chunk([delta(finish="stop")]),
    ])
    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": None,
        "audio": {"id": "audio_1", "data": "UklGRg==", "expires_at": 1700003600, "transcript": "Hello"},
    }


def test_content_streamed_as_parts_is_kept():
    """Was: content a delta carries as a list of parts was dropped. Mistral's reasoning models
    (magistral) stream their thinking so, `[{"type": "thinking", "thinking": [{"type": "text", ...}]}]`,
    then the answer; the record kept only the answer's plain text pieces, or nothing at all."""
    def thinking(text):
        return [{"type": "thinking", "thinking": [{"type": "text", "text": text}]}]

    first = thinking("It's a ")
    body = assemble([
        chunk([delta(role="assistant", content="")]),
        chunk([delta(content=first)]),
        chunk([delta(content=thinking("greeting."))]),
        chunk([delta(content="Hel")]),
        chunk([delta(content=[{"type": "text", "text": "lo"}])]),
        chunk([delta(finish="stop")]),
    ])
    # As the same answer's JSON body has it: one block per kind, each whole.
    assert body["choices"][0]["message"]["content"] == [
        {"type": "thinking", "thinking": [{"type": "text", "text": "It's a greeting."}]},
        {"type": "text", "text": "Hello"},
    ]
    assert first == thinking("It's a ")  # the relayed chunks are left as they were


def test_empty_choices_and_tool_calls_count_towards_the_size_the_answer_limit_checks() -> None:
    """Each new choice index or tool call index adds an entry to the record, content or not. Was: only
    their texts counted, so an upstream numbering empty deltas 0, 1, 2… grew the assembly (and the
    record: 200,000 choices from a 22 MB stream under a 1 MiB answer limit) without the limit firing."""
    assembler = StreamAssembler()
    for index in range(1000):
        assembler.add(chunk([delta(index)]))
        assembler.add(chunk([delta(0, tool_calls=[{"index": index}])]))
    record_size = len(orjson.dumps(assembler.result()))
    assert assembler.size >= record_size // 2
