"""The checks a chat request must pass before it is routed; each failure names its `param`."""

from __future__ import annotations

from aiproxy.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def validate_chat_request(body: dict) -> None:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' must be a non-empty string", param="model", code="invalid_type")
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("you must provide a messages parameter", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array of message objects", param="messages", code="invalid_type")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages", code="empty_array")
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{param}' must be an object", param=param, code="invalid_type")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # an object or a list cannot be looked up
            raise InvalidRequest(
                f"'{param}.role' must be one of {', '.join(sorted(ROLES))}", param=f"{param}.role", code="invalid_value"
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream", code="invalid_type")
