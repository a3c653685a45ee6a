"""Gemini error bodies -> the OpenAI error a client sees (wire-formats.md §4.6, issue 3's key rule)."""

import orjson
import pytest

from aiproxy.errors import UpstreamError, UpstreamMisconfigured
from aiproxy.providers.gemini_errors import gemini_error, parse_error_body
from aiproxy.testing.fake_gemini import error_body, rate_limited

RPC = "type.googleapis.com/google.rpc."


def mapped(status, body, headers=None):
    return gemini_error(status, parse_error_body(orjson.dumps(body)), headers or {}, "GEMINI_API_KEY")


@pytest.mark.parametrize(
    ("status", "grpc_status", "client_status", "error_type", "code"),
    [
        (400, "INVALID_ARGUMENT", 400, "invalid_request_error", None),
        (400, "FAILED_PRECONDITION", 400, "invalid_request_error", None),
        (404, "NOT_FOUND", 404, "invalid_request_error", "model_not_found"),  # as OpenAI's own 404
        (500, "INTERNAL", 500, "server_error", None),
        (503, "UNAVAILABLE", 503, "server_error", None),
        (504, "DEADLINE_EXCEEDED", 504, "server_error", "timeout"),
    ],
)
def test_status_mapping(status, grpc_status, client_status, error_type, code):
    error = mapped(status, error_body(status, grpc_status, "upstream says no"))
    assert isinstance(error, UpstreamError)
    assert error.http_status == client_status
    assert error.to_body() == {
        "error": {"message": "upstream says no", "type": error_type, "param": None, "code": code}
    }


def test_rate_limit_carries_retry_hints():
    error = mapped(429, rate_limited("22.3s").body, {"x-ratelimit-remaining": "0", "server": "ESF"})
    assert error.http_status == 429
    assert error.to_body()["error"]["type"] == "rate_limit_error"
    assert error.to_body()["error"]["code"] == "rate_limit_exceeded"
    assert error.headers == {"retry-after": "23", "retry-after-ms": "22300", "x-ratelimit-remaining": "0"}


def test_upstream_retry_after_header_wins_over_retry_info():
    error = mapped(429, rate_limited("22s").body, {"Retry-After": "5"})
    # no retry-after-ms from RetryInfo beside it: OpenAI SDKs read retry-after-ms first
    assert error.headers == {"retry-after": "5"}


def test_a_prompt_beyond_the_context_window_is_context_length_exceeded():
    message = "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."
    error = mapped(400, error_body(400, "INVALID_ARGUMENT", message))
    assert error.http_status == 400
    assert error.to_body() == {  # OpenAI's own body for it (wire-formats.md §1.6)
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


def test_per_day_quota_and_prepaid_balance_are_insufficient_quota():
    daily = mapped(429, rate_limited(quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier").body)
    assert (daily.http_status, daily.code) == (429, "insufficient_quota")
    prepaid = mapped(402, error_body(402, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted."))
    assert (prepaid.http_status, prepaid.code) == (429, "insufficient_quota")
    # OpenAI's body for an exhausted quota, and the OpenRouter route's: type and code alike.
    assert daily.to_body()["error"]["type"] == prepaid.to_body()["error"]["type"] == "insufficient_quota"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            400,
            error_body(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [{"@type": RPC + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
            ),
        ),
        (403, error_body(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")),
        (
            403,
            error_body(
                403,
                "PERMISSION_DENIED",
                "Requests to this API are blocked.",
                [{"@type": RPC + "ErrorInfo", "reason": "API_KEY_SERVICE_BLOCKED"}],
            ),
        ),
        (
            403,
            error_body(
                403,
                "PERMISSION_DENIED",
                "Generative Language API has not been used in project 123 before or it is disabled.",
                [{"@type": RPC + "ErrorInfo", "reason": "SERVICE_DISABLED"}],
            ),
        ),
        (401, {}),
    ],
    ids=["key-invalid", "key-missing", "key-blocked", "api-disabled", "bare-401"],
)
def test_rejected_gateway_key_is_an_operator_problem_never_a_401(status, body):
    error = mapped(status, body)
    assert isinstance(error, UpstreamMisconfigured)
    assert error.http_status == 502
    assert error.to_body()["error"]["type"] == "server_error"
    assert error.to_body()["error"]["code"] == "upstream_auth_failed"
    assert "Check GEMINI_API_KEY." in error.message


def test_a_403_about_what_the_request_names_is_the_clients():
    """A Files API URI (or tuned model) the project may not read: the key is fine, the request is not."""
    message = "You do not have permission to access the File abc or it may not exist."
    error = mapped(403, error_body(403, "PERMISSION_DENIED", message))
    assert isinstance(error, UpstreamError)
    assert error.http_status == 403
    assert error.to_body() == {"error": {"message": message, "type": "permission_error", "param": None, "code": None}}


def test_error_bodies_wrapped_in_an_array_and_non_json_bodies():
    wrapped = orjson.dumps([error_body(400, "INVALID_ARGUMENT", "bad field")])
    assert gemini_error(400, parse_error_body(wrapped), {}, "").message == "bad field"
    html = gemini_error(502, parse_error_body(b"<html>Bad Gateway</html>"), {}, "")
    assert (html.http_status, html.message) == (502, "The Gemini API answered HTTP 502.")
