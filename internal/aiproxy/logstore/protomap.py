"""Log store results as LogService messages. Used by the servicer and by the local CLI, so
`logdb search --json` prints the same JSON whether it reads files or asks a server.

A stored value a field cannot hold is left unset, never clamped (a clamped status or token
count would be a value the record never had) and never an error: one odd row (a status of
2**40 in a store written before ingest checked it, a seed file's text in an integer column)
must not fail every read that includes it. Timestamps are given as logs.proto says: UTC, `Z`.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from aiproxy.logstore.errors import InvalidQuery
from aiproxy.logstore.partitions import check_day_order, parse_day
from aiproxy.logstore.queries import DialogSummary
from aiproxy.logstore.records import InvalidRecord, utc_iso
from aiproxy.logstore.search import INT32_MAX, Hit, SearchFilters
from aiproxypb.v1 import logs_pb2


def iso_utc(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else ""


_INT32 = (-INT32_MAX - 1, INT32_MAX)
_INT64 = (-(2**63), 2**63 - 1)


def _int(value: Any, bounds: tuple[int, int]) -> int | None:
    """`value` if it is a whole number the proto field can hold, else None (field left unset)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if bounds[0] <= value <= bounds[1] else None


def _float(value: Any) -> float | None:
    """`value` as a finite double, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _ts(fields: dict[str, Any]) -> str:
    """The row's µs timestamp in UTC with `Z` (rows stored before ingest normalised it may carry
    another offset); the whole second of `ts` when there is none."""
    raw = fields.get("ts_iso")
    if not isinstance(raw, str) or not raw:
        return iso_utc(fields["ts"])
    if raw.endswith("Z"):
        return raw
    try:
        return utc_iso(raw)
    except InvalidRecord:
        return iso_utc(fields["ts"])


def day_arg(text: str, name: str) -> date | None:
    if not text:
        return None
    try:
        return parse_day(text)
    except ValueError as exc:
        raise InvalidQuery(str(exc), param=name) from None


def day_range(since: str, to: str) -> tuple[date | None, date | None]:
    """A request's (since, to). Dates given the wrong way round are a client error: an empty answer
    would look like a store without those days."""
    first, last = day_arg(since, "since"), day_arg(to, "to")
    try:
        check_day_order(first, last)
    except ValueError as exc:
        raise InvalidQuery(str(exc), param="to") from None
    return first, last


def filters_from_proto(message: logs_pb2.LogFilter) -> SearchFilters:
    since, to = day_range(message.since, message.to)
    return SearchFilters(
        since=since,
        to=to,
        model=message.model or None,
        provider=message.provider or None,
        api_key_hash=message.api_key_hash or None,
        status_code=message.status_code if message.HasField("status_code") else None,
        dialog_id=message.dialog_id or None,
    )


def summary(fields: dict[str, Any], score: float | None = None, snippet: str = "") -> logs_pb2.RequestSummary:
    out = logs_pb2.RequestSummary(
        request_id=fields["request_id"],
        server_id=fields["server_id"] or "",
        ts=_ts(fields),
        ts_unix=fields["ts"],
        endpoint=fields["endpoint"] or "",
        model_original=fields["model_original"] or "",
        model_mapped=fields["model_mapped"] or "",
        provider=fields["provider"] or "",
        transport=fields["transport"] or "",
        stream=fields["stream"] == 1,
        status_code=_int(fields["status_code"], _INT32) or 0,
        latency_ms=_float(fields["latency_ms"]) or 0.0,
        api_key_hash=fields["api_key_hash"] or "",
        dialog_id=fields["dialog_id"] or "",
        finish_reason=fields["finish_reason"] or "",
        snippet=snippet,
    )
    for name, value in (
        ("ttft_ms", _float(fields.get("ttft_ms"))),
        ("prompt_tokens", _int(fields.get("prompt_tokens"), _INT64)),
        ("completion_tokens", _int(fields.get("completion_tokens"), _INT64)),
        ("total_tokens", _int(fields.get("total_tokens"), _INT64)),
    ):
        if value is not None:
            setattr(out, name, value)
    if score is not None:
        out.score = score
    return out


def hit_to_proto(hit: Hit) -> logs_pb2.RequestSummary:
    return summary(hit.fields, hit.score, hit.snippet)


def record_to_proto(detail: dict[str, Any]) -> logs_pb2.RequestRecord:
    return logs_pb2.RequestRecord(
        summary=summary(detail),
        request_json=detail["request_json"],
        response_json=detail["response_json"],
        error_json=detail["error"] or "",
        dialog_parent_id=detail.get("dialog_parent_id") or "",
    )


def dialog_summary(d: DialogSummary) -> logs_pb2.DialogSummary:
    return logs_pb2.DialogSummary(
        dialog_id=d.dialog_id,
        requests=d.requests,
        first_ts=iso_utc(d.first_ts),
        last_ts=iso_utc(d.last_ts),
        api_key_hash=d.api_key_hash or "",
        models=d.models,
        first_request_id=d.first_request_id,
    )


def stats_to_proto(stats: dict[str, Any]) -> logs_pb2.StatsResponse:
    return logs_pb2.StatsResponse(
        partitions=stats["partitions"],
        fts_partitions=stats["fts_partitions"],
        requests=stats["requests"],
        dialogs=stats["dialogs"],
        bytes=stats["bytes"],
        first_ts=iso_utc(stats["first_ts"]),
        last_ts=iso_utc(stats["last_ts"]),
        by_model=stats["by_model"],
        by_provider=stats["by_provider"],
        by_status=stats["by_status"],
        server_id=stats["server_id"],
    )


JSON_TEXT_FIELDS = ("request_json", "response_json", "error_json")


def _unwrap_json(value: Any) -> Any:
    """Replace `x_json` text fields by the parsed value under `x`, recursively. A text that is not
    JSON (a damaged row: a byte flipped on disk) stays as it is, under `x_json`."""
    if isinstance(value, list):
        return [_unwrap_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in JSON_TEXT_FIELDS:
            try:
                out[key[: -len("_json")]] = orjson.loads(item) if item else None
            except orjson.JSONDecodeError:
                out[key] = item
        else:
            out[key] = _unwrap_json(item)
    return out


def message_to_json(message) -> dict:
    """A LogService reply as the JSON that REST and `logdb --json` print."""
    return _unwrap_json(
        MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            unquote_int64_if_possible=True,
        )
    )
