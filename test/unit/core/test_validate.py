"""aiproxy.chat.validate: every 400 names the offending `param`."""

from __future__ import annotations

import pytest

from aiproxy.chat.validate import validate_chat_request
from aiproxy.errors import InvalidRequest

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({"messages": [USER]}, "model", "missing_required_parameter"),
        ({"model": None, "messages": [USER]}, "model", "missing_required_parameter"),
        ({"model": "", "messages": [USER]}, "model", "invalid_type"),
        ({"model": "   ", "messages": [USER]}, "model", "invalid_type"),
        ({"model": 4, "messages": [USER]}, "model", "invalid_type"),
        ({"model": ["gpt-4o"], "messages": [USER]}, "model", "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": None}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": {"role": "user"}}, "messages", "invalid_type"),
        ({"model": "m", "messages": []}, "messages", "empty_array"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"model": "m", "messages": [USER, None]}, "messages[1]", "invalid_type"),
        ({"model": "m", "messages": [USER, {"content": "x"}]}, "messages[1].role", "invalid_value"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": "m", "messages": [{"role": "User", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": "m", "messages": [USER, USER, {"role": 1}]}, "messages[2].role", "invalid_value"),
        ({"model": "m", "messages": [USER], "stream": "true"}, "stream", "invalid_type"),
        ({"model": "m", "messages": [USER], "stream": 1}, "stream", "invalid_type"),
    ],
)
def test_each_400_names_its_param(body, param, code):
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request(body)
    error = info.value
    assert error.http_status == 400
    assert error.param == param
    assert error.code == code
    assert error.to_body()["error"]["param"] == param
    assert error.to_body()["error"]["type"] == "invalid_request_error"


def test_model_is_checked_before_messages():
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request({})
    assert info.value.param == "model"


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant", "tool", "function"])
def test_every_openai_role_is_accepted(role):
    validate_chat_request({"model": "m", "messages": [{"role": role, "content": "x"}]})


@pytest.mark.parametrize("stream", [None, True, False])
def test_valid_requests_pass(stream):
    body = {"model": "gpt-4o", "messages": [{"role": "assistant", "content": None, "tool_calls": []}, USER],
            "temperature": "not checked here", "unknown_vendor_key": {"x": 1}}
    if stream is not None:
        body["stream"] = stream
    assert validate_chat_request(body) is None
