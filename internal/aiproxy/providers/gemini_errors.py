"""Gemini error bodies (`{"error":{"code","message","status","details"}}`, google.rpc.Status) ->
the gateway's domain errors, following wire-formats.md §4.6 with one deliberate change: a
rejected or missing Gemini key is the operator's problem (502), never a 401 for the client.
Other 403s (a file or tuned model the project may not read) reach the client as 403s."""

from __future__ import annotations

import math
import re

import orjson

from aiproxy.errors import GatewayError, UpstreamError, UpstreamMisconfigured, error_type_for_http
from aiproxy.providers.base import forwardable_headers, redacted

_TYPE_PREFIX = "type.googleapis.com/google.rpc."
# ErrorInfo reasons that mean the gateway's key or project is refused: the operator's to fix.
_KEY_REASONS = frozenset({
    "API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED", "API_KEY_ANDROID_APP_BLOCKED", "API_KEY_IOS_APP_BLOCKED",
    "SERVICE_DISABLED", "CONSUMER_SUSPENDED", "CONSUMER_INVALID",
})
# What a 403 without such a reason says when the key itself is missing or refused.
_KEY_MESSAGES = ("api key", "unregistered callers")
_CODES = {404: "model_not_found", 504: "timeout"}
# Gemini's 400 for a prompt beyond the model's window: "The input token count (1200293) exceeds the
# maximum number of tokens allowed (1048576)." OpenAI names it code context_length_exceeded.
_CONTEXT_TOO_LONG = re.compile(r"input token count.*exceeds the maximum number of tokens", re.IGNORECASE)


def parse_error_body(body: bytes) -> dict:
    """The `error` object of a Gemini error body (plain or wrapped in an array), or {}."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def gemini_error(status: int, error: dict, headers, key_env: str, api_key: str = "") -> GatewayError:
    """The domain error for a Gemini HTTP status and its `error` object; `api_key` (the gateway's) is
    redacted from the message."""
    message = redacted(error.get("message") if isinstance(error.get("message"), str) else "", api_key)
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    if status == 401 or _detail_reasons(details) & _KEY_REASONS or (
        status == 403 and any(words in message.lower() for words in _KEY_MESSAGES)
    ):
        hint = f" Check {key_env}." if key_env else ""
        return UpstreamMisconfigured(
            f"The Gemini API rejected the gateway's API key ({message or f'HTTP {status}'}).{hint}"
        )
    forwarded = forwardable_headers(headers)
    code = _CODES.get(status)
    # OpenAI answers an unknown model with invalid_request_error (wire-formats.md §1.6, §4.6).
    error_type = "invalid_request_error" if status == 404 else error_type_for_http(status)
    param = None
    if status == 400 and _CONTEXT_TOO_LONG.search(message):
        # Clients that trim the history on OpenAI's (and the OpenRouter route's) code need it here too.
        code, param = "context_length_exceeded", "messages"
    if status in (402, 429):
        # 402 is Gemini's exhausted prepaid balance: OpenAI clients know that as a 429 insufficient_quota.
        code = "insufficient_quota" if status == 402 or _per_day_quota(details) else "rate_limit_exceeded"
        # OpenAI (and the OpenRouter route) answer an exhausted quota with type insufficient_quota too.
        error_type = "insufficient_quota" if code == "insufficient_quota" else "rate_limit_error"
        status = 429
        if "retry-after" not in forwarded:  # Gemini's own header wins over RetryInfo, and goes alone
            forwarded = {**_retry_headers(details), **forwarded}
    return UpstreamError(
        message or f"The Gemini API answered HTTP {status}.",
        http_status=status,
        error_type=error_type,
        code=code,
        param=param,
        headers=forwarded,
    )


def _detail_reasons(details: list[dict]) -> set[str]:
    return {d.get("reason") for d in details if d.get("@type") == _TYPE_PREFIX + "ErrorInfo"}


def _per_day_quota(details: list[dict]) -> bool:
    for detail in details:
        if detail.get("@type") == _TYPE_PREFIX + "QuotaFailure":
            for violation in detail.get("violations") or ():
                if "PerDay" in str(violation.get("quotaId", "")):
                    return True
    return False


def _retry_headers(details: list[dict]) -> dict[str, str]:
    """retry-after (whole seconds, rounded up) and retry-after-ms from RetryInfo.retryDelay ("22s", "1.5s")."""
    for detail in details:
        if detail.get("@type") == _TYPE_PREFIX + "RetryInfo":
            delay = str(detail.get("retryDelay", ""))
            try:
                seconds = float(delay[:-1]) if delay.endswith("s") else float(delay)
            except ValueError:
                return {}
            return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}
    return {}
