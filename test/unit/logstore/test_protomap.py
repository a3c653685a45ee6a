"""Stored rows as LogService messages: a value a proto field cannot hold is left unset, never an error."""

from aiproxy.logstore.protomap import message_to_json, summary
from aiproxy.logstore.search import RESULT_FIELDS

ROW = dict.fromkeys(RESULT_FIELDS) | {"request_id": "r1", "server_id": "s", "ts": 1757505600, "endpoint": "/v1/chat/completions"}


def test_values_beyond_their_proto_fields_are_left_unset():
    """A status of 2**40 (the store accepted any 64-bit integer) made every read including the row
    fail: "Value out of range" filling the int32, a 500 over REST, a traceback in the CLI."""
    fields = ROW | {"status_code": 2**40, "prompt_tokens": 2**63, "completion_tokens": "12", "total_tokens": 7.0,
                    "latency_ms": "slow", "ttft_ms": float("inf"), "stream": 1}
    out = message_to_json(summary(fields, score=-1.5))
    assert out["status_code"] == 0 and out["latency_ms"] == 0.0
    assert "prompt_tokens" not in out and "completion_tokens" not in out and "ttft_ms" not in out
    assert out["total_tokens"] == 7 and out["stream"] is True and out["score"] == -1.5
    assert message_to_json(summary(ROW | {"status_code": 503, "prompt_tokens": 2**62}))["prompt_tokens"] == 2**62


def test_timestamps_are_utc_with_z_even_for_rows_stored_with_an_offset():
    assert summary(ROW | {"ts_iso": "2025-09-10T07:00:00.123456-05:00"}).ts == "2025-09-10T12:00:00.123456Z"
    assert summary(ROW | {"ts_iso": "2025-09-10T12:00:00.123456Z"}).ts == "2025-09-10T12:00:00.123456Z"
    assert summary(ROW | {"ts_iso": None}).ts == summary(ROW | {"ts_iso": "garbage"}).ts == "2025-09-10T12:00:00Z"
