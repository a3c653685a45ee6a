"""aiproxy.protojson: OpenAI JSON -> proto -> wire bytes -> proto -> JSON must give back the same JSON.

Every comparison is type-strict (`1` and `1.0`, `0` and `False` differ), with one documented exception: the
doubles-typed request fields (temperature, top_p, presence_penalty, frequency_penalty) come back as JSON
integers when they hold whole numbers, as protojson does, because proto keeps a double and JSON does not tell
`1.0` from `1`. The domain is what orjson.loads produces (the gateway parses with orjson everywhere): integers
in [-2**63, 2**64), finite floats, strings without lone surrogates.
"""

from __future__ import annotations

import copy
import os

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiproxy.protojson import JSONTooDeep, NonFiniteNumber, json_to_message, message_to_json
from aiproxy.testing.chatfuzz import expected_after_proto
from aiproxy.testing.jsoncompare import first_difference, strict_equal
from aiproxypb.v1 import chat_pb2

REQ = chat_pb2.ChatCompletionRequest
COMPLETION = chat_pb2.ChatCompletion
CHUNK = chat_pb2.ChatCompletionChunk


# --- helpers ----------------------------------------------------------------------------------


def through_wire(data: dict, cls):
    """JSON -> message -> serialized bytes (as gRPC sends it) -> message -> JSON."""
    message = json_to_message(copy.deepcopy(data), cls)
    received = cls.FromString(message.SerializeToString())
    assert received == message
    return message_to_json(received)


def assert_round_trip(data: dict, cls=REQ) -> dict:
    back = through_wire(data, cls)
    expected = expected_after_proto(data, request=cls is REQ)
    assert strict_equal(back, expected), first_difference(back, expected)
    # And byte-identical JSON once key order is normalised.
    assert orjson.dumps(back, option=orjson.OPT_SORT_KEYS) == orjson.dumps(expected, option=orjson.OPT_SORT_KEYS)
    return back


def extra_of(message) -> dict:
    return orjson.loads(message.extra_json) if message.extra_json else {}


def test_strict_comparator_tells_int_from_float_and_bool():
    assert not strict_equal({"a": 1}, {"a": 1.0})
    assert not strict_equal([0], [False])
    assert not strict_equal({"a": None}, {})
    assert strict_equal({"a": [1, {"b": "c"}]}, {"a": [1, {"b": "c"}]})


# --- request: unions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "hello",
        "",
        None,
        [{"type": "text", "text": "a"}],
        [
            {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            {"type": "refusal", "refusal": "no"},
        ],
    ],
    ids=["text", "empty-text", "null", "one-part", "every-part-kind"],
)
def test_content_union_round_trips(content):
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    assert_round_trip(body)


def test_content_members_are_typed_not_extra():
    msg = json_to_message({"messages": [{"role": "user", "content": "hi"}]}, REQ).messages[0]
    assert msg.WhichOneof("content") == "content_text" and msg.extra_json == ""
    msg = json_to_message({"messages": [{"role": "assistant", "content": None}]}, REQ).messages[0]
    assert msg.WhichOneof("content") == "content_null" and msg.extra_json == ""
    msg = json_to_message({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, REQ).messages[0]
    assert msg.WhichOneof("content") == "content_parts"
    assert msg.content_parts.items[0].text == "x"


@pytest.mark.parametrize(
    "content", [[], {}, 5, 1.5, True, ["bare string"], [{"type": "text"}, 3]], ids=repr
)
def test_content_of_no_union_member_travels_in_extra(content):
    body = {"messages": [{"role": "user", "content": content}]}
    msg = json_to_message(body, REQ).messages[0]
    assert msg.WhichOneof("content") is None
    assert strict_equal(extra_of(msg), {"content": content})
    assert_round_trip(body)


@pytest.mark.parametrize("stop", ["\n", "", ["a", "b"], ["only"]], ids=repr)
def test_stop_union_round_trips_typed(stop):
    message = json_to_message({"stop": stop}, REQ)
    assert message.WhichOneof("stop") == ("stop_text" if isinstance(stop, str) else "stop_list")
    assert message.extra_json == ""
    assert_round_trip({"stop": stop})


@pytest.mark.parametrize("stop", [None, [], ["a", 1], {"x": 1}, 7], ids=repr)
def test_stop_values_no_member_holds_go_to_extra(stop):
    message = json_to_message({"stop": stop}, REQ)
    assert message.WhichOneof("stop") is None
    assert strict_equal(extra_of(message), {"stop": stop})
    assert_round_trip({"stop": stop})


@pytest.mark.parametrize(
    "tool_choice",
    [
        "auto",
        "none",
        "required",
        {"type": "function", "function": {"name": "get_weather"}},
        {"type": "function", "function": {"name": "f", "vendor": [1]}, "extra": True},
        {},
    ],
    ids=repr,
)
def test_tool_choice_union_round_trips(tool_choice):
    message = json_to_message({"tool_choice": tool_choice}, REQ)
    expected_member = "tool_choice_mode" if isinstance(tool_choice, str) else "tool_choice_object"
    assert message.WhichOneof("tool_choice") == expected_member
    assert_round_trip({"tool_choice": tool_choice})


@pytest.mark.parametrize("tool_choice", [None, ["auto"], 1, False], ids=repr)
def test_tool_choice_of_other_types_goes_to_extra(tool_choice):
    message = json_to_message({"tool_choice": tool_choice}, REQ)
    assert message.WhichOneof("tool_choice") is None
    assert_round_trip({"tool_choice": tool_choice})


# --- request: nulls, unknown keys, wrong types, empties -----------------------------------------


def test_nulls_unknown_keys_and_wrong_types_land_in_extra_json_and_come_back():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": None,
        "max_tokens": "100",  # wrong type
        "n": 1.0,  # a float in an int field must stay a float
        "stream": 1,  # an int in a bool field must stay an int
        "seed": True,  # a bool in an int field must stay a bool
        "user": 42,
        "logprobs": None,
        "transforms": ["middle-out"],  # OpenRouter
        "provider": {"order": ["a", "b"], "allow_fallbacks": False},
        "reasoning": {"effort": "high"},
        "extra_json": "a key that happens to be called extra_json",
        "content_text": "not a field of the request",
        "parameters_json": {"x": 1},
    }
    message = json_to_message(body, REQ)
    extra = extra_of(message)
    assert set(extra) == set(body) - {"model", "messages"}
    assert not message.HasField("temperature") and not message.HasField("max_tokens")
    assert_round_trip(body)


def test_empty_arrays_and_objects_are_preserved():
    body = {
        "messages": [],
        "tools": [],
        "stop": [],
        "metadata": {},
        "response_format": {},
        "stream_options": {},
        "tool_choice": {},
        "logit_bias": {},
    }
    assert_round_trip(body)
    message = {"role": "assistant", "content": None, "tool_calls": []}
    assert_round_trip({"messages": [message]})
    assert_round_trip({"messages": [{}]})


def test_metadata_map_round_trips_and_non_string_values_go_to_extra():
    assert_round_trip({"metadata": {"team": "a", "empty": ""}})
    message = json_to_message({"metadata": {"team": "a", "n": 1}}, REQ)
    assert len(message.metadata) == 0
    assert_round_trip({"metadata": {"team": "a", "n": 1}})


def test_ints_stay_ints_and_floats_in_int_fields_stay_floats():
    body = {"max_tokens": 100, "max_completion_tokens": 0, "n": 2, "seed": -7, "top_logprobs": 5}
    back = assert_round_trip(body)
    assert all(type(back[k]) is int for k in body)
    body = {"max_tokens": 100.0, "seed": 1.5}
    back = assert_round_trip(body)
    assert all(type(back[k]) is float for k in body)


@pytest.mark.parametrize(
    "value,typed",
    [(2**63 - 1, True), (-(2**63), True), (2**63, False), (2**64 - 1, False)],
    ids=["int64-max", "int64-min", "int64-max+1", "uint64-max"],
)
def test_int64_bounds(value, typed):
    # (orjson reads integers below -2**63 as floats, so no JSON body holds one.)
    message = json_to_message({"seed": value}, REQ)
    assert message.HasField("seed") is typed
    assert ("seed" in extra_of(message)) is not typed
    back = assert_round_trip({"seed": value})
    assert type(back["seed"]) is int and back["seed"] == value


def test_doubles_fields_documented_exception_whole_numbers_come_back_as_ints():
    """temperature & co. are proto doubles: 1.0 comes back as 1 (protojson does the same); other values exactly."""
    back = through_wire({"temperature": 1.0, "top_p": 0.0, "presence_penalty": -2.0, "frequency_penalty": 2}, REQ)
    assert strict_equal(back, {"temperature": 1, "top_p": 0, "presence_penalty": -2, "frequency_penalty": 2})
    for value in (0.7, 1e-9, 0.1 + 0.2, 1.5e300, -1.25):
        back = through_wire({"temperature": value}, REQ)
        assert type(back["temperature"]) is float and back["temperature"] == value
    # Integers a double cannot hold exactly are not stored typed at all, so they come back unchanged.
    for value in (2**53, 2**53 + 1, -(2**60)):
        message = json_to_message({"top_p": value}, REQ)
        assert not message.HasField("top_p")
        assert strict_equal(through_wire({"top_p": value}, REQ), {"top_p": value})
    # Booleans are not numbers.
    assert strict_equal(through_wire({"temperature": True}, REQ), {"temperature": True})


def test_json_schema_fields_carry_any_json_value():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1.0, "maximum": 10}},
              "required": [], "additionalProperties": False}
    body = {
        "tools": [
            {"type": "function", "function": {"name": "f", "description": "d", "parameters": schema, "strict": True}},
            {"type": "function", "function": {"name": "g", "parameters": {}}},
            {"type": "function", "function": {"name": "h", "parameters": None}},
            {"type": "function", "function": {"name": "i", "parameters": "not a schema"}},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": False}},
    }
    message = json_to_message(body, REQ)
    assert orjson.loads(message.tools[0].function.parameters_json) == schema
    assert_round_trip(body)


def test_messages_with_tool_calls_and_vendor_keys():
    body = {
        "model": "openrouter/x",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "what's the weather", "name": "bob"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": ""}},
                ],
                "reasoning_details": [{"type": "reasoning.text", "text": "thinking", "signature": None, "index": 0}],
                "reasoning": "thinking",
                "refusal": None,
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    }
    message = json_to_message(body, REQ)
    assert extra_of(message.messages[0].content_parts.items[0]) == {"cache_control": {"type": "ephemeral"}}
    assert set(extra_of(message.messages[2])) == {"reasoning_details", "reasoning", "refusal"}
    assert message.messages[2].tool_calls[0].function.arguments == "{\"c\":\"Paris\"}"
    assert_round_trip(body)


def test_a_failed_nested_value_is_cleared_before_it_is_kept_raw():
    # The list is rejected after the setter saw it: nothing of it may stay in the typed field.
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}]}
    msg = json_to_message(body, REQ).messages[0]
    assert not msg.HasField("content_parts")
    assert_round_trip(body)


def test_unicode_and_odd_strings_round_trip():
    body = {"messages": [{"role": "user", "content": "héllo 🌍 \u0000 \n\t\"\\ 日本語"}], "user": "\u2028"}
    assert_round_trip(body)


def test_conversion_does_not_mutate_its_input():
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}], "stop": None, "x": {"y": []}}
    snapshot = copy.deepcopy(body)
    json_to_message(body, REQ)
    assert body == snapshot


# --- responses ------------------------------------------------------------------------------


def test_chat_completion_with_openrouter_extras():
    body = {
        "id": "gen-123",
        "provider": "DeepInfra",
        "model": "deepseek/deepseek-chat-v3.1:free",
        "object": "chat.completion",
        "created": 1732600000,
        "choices": [
            {
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "STOP",
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!", "refusal": None, "reasoning": None},
            }
        ],
        "system_fingerprint": None,
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "total_tokens": 12,
            "cost": 0.0000123,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
        },
    }
    message = json_to_message(body, COMPLETION)
    assert message.usage.total_tokens == 12
    assert extra_of(message) == {"provider": "DeepInfra", "system_fingerprint": None}
    assert set(extra_of(message.choices[0])) == {"logprobs", "native_finish_reason"}
    assert extra_of(message.usage) == {"cost": 0.0000123, "is_byok": False}
    assert_round_trip(body, COMPLETION)


def test_cost_of_zero_stays_an_int_and_whole_float_cost_stays_a_float():
    for cost in (0, 0.0, 1.0, 2.5e-7):
        assert_round_trip({"usage": {"prompt_tokens": 1, "cost": cost}}, COMPLETION)


def test_chunks_usage_null_and_usage_only_chunk():
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "system_fingerprint": "fp",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
         "usage": None},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None, "native_finish_reason": None}],
         "usage": None, "provider": "OpenAI"},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "cost": 0}},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"tool_calls": [
             {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}},
             {"index": 1, "function": {"arguments": "{\"q\":"}}]}, "finish_reason": None}]},
    ]
    for chunk in chunks:
        assert_round_trip(chunk, CHUNK)
    first = json_to_message(chunks[0], CHUNK)
    assert not first.HasField("usage") and extra_of(first) == {"usage": None}
    usage_only = json_to_message(chunks[3], CHUNK)
    assert len(usage_only.choices) == 0 and extra_of(usage_only) == {"choices": []}
    assert usage_only.usage.prompt_tokens == 3


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize("cls, body_of, enclosing", [
    (COMPLETION, lambda deep: {"choices": [{"message": {"role": "assistant", "vendor": deep}}]}, 4),
    (CHUNK, lambda deep: {"choices": [{"delta": {"content": [{"type": "x", "vendor": deep}]}}]}, 6),
    (REQ, lambda deep: {"tools": [{"function": {"name": "f", "parameters": deep}}]}, 4),
], ids=["message-extra", "part-extra", "json-field"])
def test_nesting_is_counted_from_the_body_not_from_each_extra(cls, body_of, enclosing):
    """orjson writes 254 levels; a body deeper than that must be refused as it is converted, wherever
    the deep value sits. Counted from its own extra_json, a value deep inside a choice passed, and the
    facade could not write the answer (a 500, or a stream cut off by one)."""
    writable = body_of(nested(254 - enclosing))
    orjson.dumps(writable)
    assert_round_trip(writable, cls)
    too_deep = body_of(nested(255 - enclosing))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(too_deep)
    with pytest.raises(JSONTooDeep):
        json_to_message(too_deep, cls)


def test_message_without_extra_json_cannot_take_unknown_keys():
    with pytest.raises(ValueError, match="extra_json"):
        json_to_message({"id": "x", "unknown": 1}, chat_pb2.Model)


# --- property tests ---------------------------------------------------------------------------

# Strings as orjson decodes them: any code point but lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SMALL_INT = st.integers(min_value=-5, max_value=2**31)
FLOAT = st.floats(allow_nan=False, allow_infinity=False)
SCALAR = st.none() | st.booleans() | INT | FLOAT | TEXT
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def maybe_wrong(good):
    """Mostly the well-typed value; sometimes any JSON (wrong type, null, empty container)."""
    return st.one_of(good, good, good, JSON)


def openai_object(required: dict, optional: dict):
    """A dict with the given keys plus, sometimes, unknown vendor keys."""
    base = st.fixed_dictionaries({k: maybe_wrong(v) for k, v in required.items()},
                                 optional={k: maybe_wrong(v) for k, v in optional.items()})
    extras = st.dictionaries(st.sampled_from(["cache_control", "vendor_x", "reasoning_details", "extra_json", "x_json"]),
                             JSON, max_size=2)
    return st.builds(lambda b, e: {**e, **b}, base, extras)


PART = openai_object(
    {"type": st.sampled_from(["text", "image_url", "input_audio", "file", "refusal"])},
    {
        "text": TEXT,
        "image_url": openai_object({"url": TEXT}, {"detail": st.sampled_from(["auto", "low", "high"])}),
        "input_audio": openai_object({"data": TEXT}, {"format": st.sampled_from(["wav", "mp3"])}),
        "file": openai_object({}, {"filename": TEXT, "file_data": TEXT, "file_id": TEXT}),
        "refusal": TEXT,
    },
)
FUNCTION_CALL = openai_object({}, {"name": TEXT, "arguments": TEXT})
TOOL_CALL = openai_object({}, {"index": SMALL_INT, "id": TEXT, "type": st.just("function"), "function": FUNCTION_CALL})
MESSAGE = openai_object(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"])},
    {
        "content": st.one_of(TEXT, st.none(), st.lists(PART, max_size=3)),
        "name": TEXT,
        "tool_calls": st.lists(TOOL_CALL, max_size=3),
        "tool_call_id": TEXT,
        "refusal": st.none() | TEXT,
    },
)
TOOL = openai_object(
    {"type": st.just("function")},
    {"function": openai_object({"name": TEXT}, {"description": TEXT, "parameters": JSON, "strict": st.booleans()})},
)
REQUEST = openai_object(
    {"model": TEXT, "messages": st.lists(MESSAGE, max_size=4)},
    {
        "stream": st.booleans(),
        "temperature": FLOAT | SMALL_INT,
        "top_p": FLOAT,
        "presence_penalty": FLOAT,
        "frequency_penalty": FLOAT,
        "max_tokens": INT,
        "max_completion_tokens": SMALL_INT,
        "stop": TEXT | st.lists(TEXT, max_size=4),
        "n": SMALL_INT,
        "seed": INT,
        "logprobs": st.booleans(),
        "top_logprobs": SMALL_INT,
        "tools": st.lists(TOOL, max_size=2),
        "tool_choice": st.sampled_from(["none", "auto", "required"])
        | openai_object({"type": st.just("function")}, {"function": openai_object({"name": TEXT}, {})}),
        "parallel_tool_calls": st.booleans(),
        "response_format": openai_object(
            {"type": st.sampled_from(["text", "json_object", "json_schema"])},
            {"json_schema": openai_object({"name": TEXT}, {"schema": JSON, "strict": st.booleans()})},
        ),
        "stream_options": openai_object({}, {"include_usage": st.booleans()}),
        "user": TEXT,
        "metadata": st.dictionaries(TEXT, TEXT, max_size=3),
    },
)
USAGE = openai_object(
    {},
    {"prompt_tokens": SMALL_INT, "completion_tokens": SMALL_INT, "total_tokens": SMALL_INT, "cost": FLOAT,
     "prompt_tokens_details": openai_object({}, {"cached_tokens": SMALL_INT}),
     "completion_tokens_details": openai_object({}, {"reasoning_tokens": SMALL_INT})},
)
ENVELOPE = {"id": TEXT, "object": TEXT, "created": INT, "model": TEXT}
COMPLETION_BODY = openai_object(
    ENVELOPE,
    {"usage": USAGE, "system_fingerprint": TEXT, "provider": TEXT,
     "choices": st.lists(openai_object({"index": SMALL_INT, "message": MESSAGE},
                                       {"finish_reason": TEXT, "native_finish_reason": TEXT, "logprobs": JSON}),
                         max_size=2)},
)
CHUNK_BODY = openai_object(
    ENVELOPE,
    {"usage": st.none() | USAGE, "system_fingerprint": TEXT,
     "choices": st.lists(openai_object({"index": SMALL_INT, "delta": MESSAGE},
                                       {"finish_reason": st.none() | TEXT, "logprobs": JSON}),
                         max_size=2)},
)

# Few examples by default so the unit suite stays fast; HYPOTHESIS_EXAMPLES=2000 for a deep run.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "40"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(REQUEST)
def test_property_any_openai_request_round_trips_strictly(body):
    assert_round_trip(body, REQ)


@PROPERTY
@given(COMPLETION_BODY)
def test_property_any_completion_round_trips_strictly(body):
    assert_round_trip(body, COMPLETION)


@PROPERTY
@given(CHUNK_BODY)
def test_property_any_chunk_round_trips_strictly(body):
    assert_round_trip(body, CHUNK)


@PROPERTY
@given(st.dictionaries(st.sampled_from(sorted(REQ.DESCRIPTOR.fields_by_name) + ["stop", "tool_choice", "x"]),
                       JSON, max_size=6))
def test_property_any_json_under_the_request_field_names_round_trips(body):
    assert_round_trip(body, REQ)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_doubles_have_no_json_and_name_their_key(value):
    with pytest.raises(NonFiniteNumber) as info:
        message_to_json(chat_pb2.ChatCompletionRequest(model="m", top_p=value))
    assert info.value.param == "top_p"
    assert message_to_json(chat_pb2.ChatCompletionRequest(top_p=1e300, temperature=0.5)) == {"top_p": 1e300,
                                                                                               "temperature": 0.5}
