"""aiproxy.chat.record.Exchange.record: any response shape still gives a record."""

from __future__ import annotations

import orjson
import pytest

from aiproxy.chat.record import Exchange

ODD_RESPONSES = [
    {"id": "x", "object": "chat.completion", "choices": 5},
    {"choices": "abc"},
    {"choices": [5, {"finish_reason": "stop"}]},
    {"choices": [{"finish_reason": {"nested": 1}}], "usage": 7},
    {"choices": [[]], "usage": [1, 2]},
    {"choices": {"0": {"finish_reason": "stop"}}},
    [1, 2],
    "text",
    None,
]


@pytest.mark.parametrize("response", ODD_RESPONSES, ids=range(len(ODD_RESPONSES)))
def test_record_takes_only_well_typed_fields(response):
    exchange = Exchange(request_id="r", transport="http", server_id="s", response=response)
    record = exchange.record()
    assert record["finish_reason"] is None and record["usage"] is None
    assert record["response"] == (response if isinstance(response, dict) else None)
    orjson.dumps(record)


def test_record_of_a_well_formed_response():
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    response = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "length"}], "usage": usage}
    record = Exchange(request_id="r", transport="http", server_id="s", response=response).record()
    assert (record["finish_reason"], record["usage"]) == ("length", usage)
