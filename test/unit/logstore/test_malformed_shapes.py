"""Records hold whatever clients and upstreams sent (a 400 is still request-logged), so text
extraction and thread hashing must accept any JSON shape: take the text that has the expected
shape, skip the rest, never raise."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from aiproxy.logstore.fragments import extract_fragments, thread_hashes
from aiproxy.logstore.records import from_gateway_record
from aiproxy.testing.logrecords import chat_record

# Any JSON value, including numbers beyond int64 (orjson reads up to 2**64-1).
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def _list_of(item):
    """A JSON array of `item`s or of junk, or junk where the array belongs."""
    return JUNK | st.lists(item | JUNK, max_size=3)


def _dict(**fields):
    return st.fixed_dictionaries({}, optional={name: value | JUNK for name, value in fields.items()})


CONTENT = st.text(max_size=4) | _list_of(_dict(type=st.just("text"), text=st.text(max_size=4)))
TOOL_CALLS = _list_of(_dict(id=st.text(max_size=4), function=_dict(name=st.text(max_size=4), arguments=JUNK)))
MESSAGE = _dict(role=st.sampled_from(["user", "assistant", "tool"]), content=CONTENT, tool_calls=TOOL_CALLS,
                tool_call_id=st.text(max_size=4))
REQUEST = _dict(model=st.text(max_size=4), messages=_list_of(MESSAGE), prompt=JUNK,
                contents=_list_of(_dict(parts=CONTENT)))
RESPONSE = JUNK | _dict(choices=_list_of(_dict(message=MESSAGE, delta=MESSAGE, finish_reason=JUNK)),
                        content=JUNK, candidates=_list_of(_dict(content=_dict(parts=CONTENT))), usage=JUNK)


@settings(max_examples=400, deadline=None)
@given(REQUEST, RESPONSE)
def test_any_shape_yields_fragments_and_hashes_without_raising(request, response):
    fragments = extract_fragments(request, response)
    assert all(isinstance(role, str) and isinstance(text, str) and text for role, text in fragments)
    thread_hashes(request, response)


@settings(max_examples=200, deadline=None)
@given(REQUEST, RESPONSE, JUNK)
def test_any_request_or_response_shape_becomes_a_row(request, response, usage):
    record = chat_record([], "", ts=datetime(2025, 9, 10, tzinfo=UTC))
    record.update(request=request, response=response, usage=usage)
    row = from_gateway_record(record, "srv")
    assert row.values["request_id"] == record["request_id"]


def test_text_is_still_taken_from_the_well_formed_parts():
    request = {"messages": [1, "x", {"role": "user", "content": "kept", "tool_calls": 5},
                            {"role": "assistant", "content": [3, {"text": "part"}], "tool_calls": [7, {"function": 2}]}]}
    response = {"choices": [5, {"message": {"content": "answer", "tool_calls": "x"}}]}
    assert extract_fragments(request, response) == [("user", "kept"), ("assistant", "part"), ("assistant", "answer")]
    assert extract_fragments({"messages": 1}, {"choices": 5}) == []
    assert thread_hashes(request, response).next is not None


def test_token_counts_beyond_sqlite_integers_or_negative_are_dropped():
    record = chat_record([{"role": "user", "content": "hi"}], "x", ts=datetime(2025, 9, 10, tzinfo=UTC))
    record["usage"] = {"prompt_tokens": 2**64 - 1, "completion_tokens": 1e300, "total_tokens": -(2**63)}
    values = from_gateway_record(record, "srv").values
    assert (values["prompt_tokens"], values["completion_tokens"], values["total_tokens"]) == (None, None, None)


def test_tool_call_arguments_nested_beyond_what_orjson_writes_still_hash():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * 300 + "]" * 300}}
    request = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]},
                            {"role": "tool", "tool_call_id": "c1", "content": "y"}]}
    assert thread_hashes(request, None).prefix
