"""Turning one parsed log record into one `requests` row plus its FTS fragments.

Two inputs: the gateway's JSON-lines record (schema `aiproxy.request.v1`) and the seed's
"API Request/Response" record. Row ids: the record's own `request_id` for the former, the
seed's formula for the latter (sha256 of server id, raw timestamp, endpoint and the hashes of
the canonical request and response JSON), so re-ingesting seed logs finds the seed's rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from aiproxy.logstore.database import REQUEST_COLUMNS
from aiproxy.logstore.fragments import extract_fragments, thread_hashes

_EMPTY_ROW = dict.fromkeys(REQUEST_COLUMNS)
_ROW_TUPLE = itemgetter(*REQUEST_COLUMNS)


class InvalidRecord(ValueError):
    """A decodable record that cannot become a row (missing or malformed required field)."""


@dataclass(slots=True)
class Row:
    values: dict[str, Any]
    fragments: list[tuple[str, str]]

    @property
    def ts(self) -> int:
        return self.values["ts"]

    def as_tuple(self) -> tuple:
        return _ROW_TUPLE({**_EMPTY_ROW, **self.values})

    def size(self) -> int:
        """Rough memory/transaction weight, for batch limits."""
        return len(self.values["request_json"]) + len(self.values["response_json"]) + 128


def _moment(raw: Any) -> datetime:
    """The instant a record's timestamp names; a timestamp without an offset is UTC."""
    if not isinstance(raw, str) or not raw:
        raise InvalidRecord("missing timestamp")
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRecord(f"timestamp {raw!r} is not ISO-8601") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_ts(raw: Any) -> int:
    return int(_moment(raw).timestamp())


def utc_iso(raw: str) -> str:
    """A timestamp as logs.proto states instants: UTC, `Z` suffix. One already ending in `Z` is
    kept as written (its precision too); another offset, or none, is converted to µs and `Z`.
    Raises InvalidRecord when `raw` is not ISO-8601."""
    return _instant(raw)[1]


def _instant(raw: Any) -> tuple[int, str]:
    """(epoch seconds, utc_iso form) of a record's timestamp, parsed once."""
    moment = _moment(raw)
    return int(moment.timestamp()), raw if raw.endswith("Z") else moment.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


_SQLITE_MIN_INT, _SQLITE_MAX_INT = -(2**63), 2**63 - 1


def _int_or_none(value: Any, low: int = _SQLITE_MIN_INT, high: int = _SQLITE_MAX_INT) -> int | None:
    """None unless `value` is a whole number in low..high (by default what SQLite can store: a
    2**64-1 token count from an upstream would otherwise fail the insert of the whole batch, on
    every run). A fraction (2.5) is not truncated to a number the record never said."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if low <= number <= high else None


def _status_or_none(value: Any) -> int | None:
    """An HTTP status (100..599), else None: the store's readers put it in logs.proto's int32
    status_code, where 2**40 failed every read that included the row."""
    return _int_or_none(value, 100, 599)


def _count_or_none(value: Any) -> int | None:
    """A token count: 0..2**63-1 (logs.proto's int64), else None."""
    return _int_or_none(value, 0)


def _float_or_none(value: Any) -> float | None:
    """A finite number, else None (`"inf"` or `"nan"` strings are not durations)."""
    try:
        number = float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _stream(value: Any) -> int | None:
    """Only a JSON boolean says whether the exchange streamed: `"false"` is not true."""
    return int(value) if isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _common(values: dict[str, Any], request: Any, response: Any) -> Row:
    hashes = thread_hashes(request, response)
    values["thread_prefix_hash"] = hashes.prefix
    values["thread_next_hash"] = hashes.next
    values["thread_tail_prefix_hash"] = hashes.tail_prefix
    values["thread_tail_next_hash"] = hashes.tail_next
    return Row(values, extract_fragments(request, response))


def from_gateway_record(record: Any, default_server_id: str) -> Row:
    """A JSON-lines record of the gateway (design.md, schema aiproxy.request.v1)."""
    if not isinstance(record, dict):
        raise InvalidRecord("record is not a JSON object")
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRecord("missing request_id")
    endpoint = record.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidRecord("missing endpoint")
    request, response = record.get("request"), record.get("response")
    if request is None:  # a refused request whose body could not be read (bad JSON, too large)
        request = {}
    elif not isinstance(request, dict):
        raise InvalidRecord("request is not a JSON object")
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    error = record.get("error")
    ts, ts_iso = _instant(record.get("ts"))
    values = {
        "request_id": request_id,
        "server_id": str(record.get("server_id") or default_server_id),
        "ts": ts,
        "ts_iso": ts_iso,
        "endpoint": endpoint,
        "model_original": _str_or_none(record.get("model_original") or request.get("model")),
        "model_mapped": _str_or_none(record.get("model_mapped")),
        "status_code": _status_or_none(record.get("status_code")),
        "latency_ms": _float_or_none(record.get("latency_ms")),
        "api_key_hash": _str_or_none(record.get("api_key_hash")),
        "request_json": orjson.dumps(record.get("request")).decode(),
        "response_json": orjson.dumps(response).decode(),
        "provider": _str_or_none(record.get("provider")),
        "transport": _str_or_none(record.get("transport")),
        "stream": _stream(record.get("stream")),
        "ttft_ms": _float_or_none(record.get("ttft_ms")),
        "prompt_tokens": _count_or_none(usage.get("prompt_tokens")),
        "completion_tokens": _count_or_none(usage.get("completion_tokens")),
        "total_tokens": _count_or_none(usage.get("total_tokens")),
        "finish_reason": _str_or_none(record.get("finish_reason")),
        "error": orjson.dumps(error).decode() if error is not None else None,
    }
    return _common(values, request, response)


def is_seed_exchange(record: Any) -> bool:
    """The seed's log files hold many events; only "API Request/Response" ones become rows."""
    return isinstance(record, dict) and all(k in record for k in ("endpoint", "request", "response"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seed_request_id(server_id: str, ts_iso: str, endpoint: str, request_json: str, response_json: str) -> str:
    """seed-spec §7.2: sha256(server_id|ts_iso|endpoint|sha256(request_json)|sha256(response_json))."""
    return _sha(f"{server_id}|{ts_iso}|{endpoint}|{_sha(request_json)}|{_sha(response_json)}")


def from_seed_record(record: dict, server_id: str) -> Row:
    """An "API Request/Response" record of the seed's `v1_chat_completions.log`."""
    ts_iso = record.get("timestamp")
    ts = parse_ts(ts_iso)
    endpoint = record.get("endpoint")
    request, response = record.get("request"), record.get("response")
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidRecord("missing endpoint")
    if request is None or response is None:
        raise InvalidRecord("request or response is null")
    request_json = json.dumps(request, ensure_ascii=False, sort_keys=True)
    response_json = json.dumps(response, ensure_ascii=False, sort_keys=True)
    model_original = request.get("_original_model") or request.get("model") if isinstance(request, dict) else None
    usage = response.get("usage") if isinstance(response, dict) and isinstance(response.get("usage"), dict) else {}
    choices = response.get("choices") if isinstance(response, dict) else None
    first_choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    values = {
        "request_id": seed_request_id(server_id, ts_iso, endpoint, request_json, response_json),
        "server_id": server_id,
        "ts": ts,
        "ts_iso": ts_iso,
        "endpoint": endpoint,
        "model_original": _str_or_none(model_original),
        "model_mapped": _str_or_none(response.get("model")) if isinstance(response, dict) else None,
        "status_code": _status_or_none(record.get("status_code")),
        "latency_ms": _float_or_none(record.get("latency_ms")),
        "api_key_hash": _str_or_none(record.get("api_key_hash")),
        "request_json": request_json,
        "response_json": response_json,
        "stream": int(request.get("stream") is True) if isinstance(request, dict) else None,
        "prompt_tokens": _count_or_none(usage.get("prompt_tokens")),
        "completion_tokens": _count_or_none(usage.get("completion_tokens")),
        "total_tokens": _count_or_none(usage.get("total_tokens")),
        "finish_reason": _str_or_none(first_choice.get("finish_reason")),
    }
    return _common(values, request, response)
