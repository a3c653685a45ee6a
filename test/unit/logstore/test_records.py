import hashlib
import json
from datetime import UTC, datetime

import pytest

from aiproxy.logstore.fragments import extract_fragments, thread_hashes
from aiproxy.logstore.records import InvalidRecord, from_gateway_record, from_seed_record
from aiproxy.testing.logrecords import chat_record, seed_record

T0 = datetime(2025, 9, 10, 12, 0, tzinfo=UTC)


def test_gateway_record_becomes_a_row_with_the_new_columns():
    record = chat_record([{"role": "user", "content": "hi"}], "hello", ts=T0, stream=True, request_id="req-1")
    row = from_gateway_record(record, "fallback")
    v = row.values
    assert (v["request_id"], v["server_id"], v["ts"]) == ("req-1", "srv-test", int(T0.timestamp()))
    assert (v["provider"], v["transport"], v["stream"], v["ttft_ms"]) == ("openrouter", "http", 1, 3.0)
    assert (v["prompt_tokens"], v["completion_tokens"], v["total_tokens"], v["finish_reason"]) == (10, 5, 15, "stop")
    assert json.loads(v["request_json"]) == record["request"]
    assert ("user", "hi") in row.fragments and ("assistant", "hello") in row.fragments


def test_record_server_id_falls_back_to_the_store_identity():
    record = chat_record([{"role": "user", "content": "hi"}], "x", ts=T0)
    del record["server_id"]
    assert from_gateway_record(record, "srv-store").values["server_id"] == "srv-store"


def test_failed_request_keeps_its_error():
    record = chat_record([{"role": "user", "content": "hi"}], "upstream down", ts=T0, status_code=502)
    values = from_gateway_record(record, "s").values
    assert values["status_code"] == 502 and json.loads(values["error"])["message"] == "upstream down"


@pytest.mark.parametrize(("field", "value"), [("request_id", None), ("endpoint", None), ("ts", None), ("request", [1])])
def test_record_without_a_required_field_is_invalid(field, value):
    """(A null request is a refused unreadable body, and valid.)"""
    record = chat_record([{"role": "user", "content": "hi"}], "x", ts=T0)
    record[field] = value
    with pytest.raises(InvalidRecord):
        from_gateway_record(record, "s")


def test_seed_record_id_is_the_seed_formula():
    event = seed_record(chat_record([{"role": "user", "content": "hi"}], "x", ts=T0))
    row = from_seed_record(event, "srv")
    req = json.dumps(event["request"], ensure_ascii=False, sort_keys=True)
    resp = json.dumps(event["response"], ensure_ascii=False, sort_keys=True)

    def sha(text):
        return hashlib.sha256(text.encode()).hexdigest()

    expected = sha(f"srv|{event['timestamp']}|/v1/chat/completions|{sha(req)}|{sha(resp)}")
    assert row.values["request_id"] == expected
    assert row.values["request_json"] == req and row.values["model_mapped"] == "openai/gpt-4o"


def test_fragments_cover_parts_tool_calls_prompt_gemini_and_answers():
    request = {
        "messages": [
            {"role": "system", "content": "  be brief  "},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "image_url"}, {"text": "part two"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "lookup", "arguments": '{"q":"paris"}'}}]},
            {"role": "tool", "content": "sunny"},
            {"role": "user", "content": "be brief"},
        ],
        "prompt": "legacy prompt",
        "contents": [{"parts": [{"text": "gemini text"}]}],
    }
    response = {"choices": [{"message": {"content": "answer"}}, {"message": {"content": "second"}}], "content": "top"}
    fragments = extract_fragments(request, response)
    assert ("system", "be brief") in fragments and ("user", "be brief") in fragments
    assert ("user", "part one\npart two") in fragments
    assert ("assistant", 'lookup {"q":"paris"}') in fragments
    assert ("assistant", "answer\n\nsecond") in fragments and ("assistant", "top") in fragments
    assert ("user", "legacy prompt") in fragments and ("user", "gemini text") in fragments
    assert len(fragments) == len(set(fragments))


def test_thread_hashes_link_a_turn_to_the_next():
    first = {"messages": [{"role": "user", "content": "q1"}]}
    answer = {"choices": [{"message": {"role": "assistant", "content": "a1", "refusal": None}}]}
    second = {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]}
    h1, h2 = thread_hashes(first, answer), thread_hashes(second, None)
    assert h1.prefix == "" and h2.prefix == h1.next and h2.tail_prefix == h1.tail_next
    assert h2.next is None
    assert thread_hashes({"prompt": "x"}, answer).prefix is None


@pytest.mark.parametrize(("value", "stored"), [(True, 1), (False, 0), (None, None), ("false", None), ("true", None), (1, None)])
def test_only_a_json_boolean_says_whether_a_request_streamed(value, stored):
    """`"stream": "false"` was stored (and reported) as a streamed request."""
    record = chat_record([{"role": "user", "content": "hi"}], "x", ts=T0)
    record["stream"] = value
    assert from_gateway_record(record, "s").values["stream"] == stored
    event = seed_record(chat_record([{"role": "user", "content": "hi"}], "x", ts=T0))
    event["request"]["stream"] = value
    assert from_seed_record(event, "srv").values["stream"] == (1 if value is True else 0)


@pytest.mark.parametrize(
    ("raw", "ts_iso"),
    [
        ("2025-09-10T07:00:00.123456-05:00", "2025-09-10T12:00:00.123456Z"),
        ("2025-09-10T14:00:00+02:00", "2025-09-10T12:00:00.000000Z"),
        ("2025-09-10T12:00:00.5", "2025-09-10T12:00:00.500000Z"),  # no offset: UTC (seed rule)
        ("2025-09-10T12:00:00.123456Z", "2025-09-10T12:00:00.123456Z"),  # already UTC: kept as written
        ("2025-09-10T12:00:00Z", "2025-09-10T12:00:00Z"),
    ],
)
def test_a_timestamp_with_an_offset_is_stored_in_utc_with_z(raw, ts_iso):
    """logs.proto: instants carry a Z suffix; `…-05:00` was stored and returned as written."""
    record = chat_record([{"role": "user", "content": "hi"}], "x", ts=T0)
    record["ts"] = raw
    values = from_gateway_record(record, "s").values
    assert values["ts_iso"] == ts_iso and values["ts"] == int(T0.timestamp())


@pytest.mark.parametrize(
    ("status", "stored"), [(2**40, None), (99, None), (600, None), (-200, None), (404.0, 404), (502, 502), ("503", 503)]
)
def test_a_status_outside_http_is_not_stored(status, stored):
    """logs.proto's status_code is an int32: a stored 2**40 failed every read including the row."""
    record = chat_record([{"role": "user", "content": "hi"}], "x", ts=T0)
    record["status_code"] = status
    assert from_gateway_record(record, "s").values["status_code"] == stored
    assert from_seed_record({**seed_record(record), "status_code": status}, "srv").values["status_code"] == stored


def test_token_counts_and_durations_outside_their_ranges_are_not_stored():
    record = chat_record([{"role": "user", "content": "hi"}], "x", ts=T0)
    record["usage"] = {"prompt_tokens": 2**62, "completion_tokens": -5, "total_tokens": 2.5}
    record.update(latency_ms="inf", ttft_ms="nan")
    values = from_gateway_record(record, "s").values
    assert (values["prompt_tokens"], values["completion_tokens"], values["total_tokens"]) == (2**62, None, None)
    assert (values["latency_ms"], values["ttft_ms"]) == (None, None)
