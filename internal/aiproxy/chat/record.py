"""Exchange records: what one chat call did, written as one JSON line (design.md's request
log record, schema aiproxy.request.v1). ChatService writes them, so REST and gRPC log alike."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from loguru import logger

from aiproxy.errors import GatewayError
from aiproxy.logsetup import write_request_record

SCHEMA = "aiproxy.request.v1"
ENDPOINT = "/v1/chat/completions"


def utc_now_iso() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Exchange:
    request_id: str
    transport: str
    server_id: str
    api_key_hash: str | None = None
    request: dict | None = None
    model_original: str | None = None
    model_mapped: str | None = None
    provider: str | None = None
    stream: bool = False
    ts: str = field(default_factory=utc_now_iso)
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    status_code: int = 200
    response: dict | None = None
    error: dict | None = None

    def began_at(self, started: float) -> None:
        """The exchange began at `started` (time.perf_counter()), before this object was made."""
        self.ts = _iso(datetime.now(UTC) - timedelta(seconds=time.perf_counter() - started))
        self.started = started

    def fail(self, exc: GatewayError) -> None:
        self.status_code = exc.http_status
        self.error = {"message": exc.message, "type": exc.error_type, "code": exc.code}
        if self.response is None:
            self.response = exc.to_body()

    def record(self) -> dict:
        latency = (time.perf_counter() - self.started) * 1000
        # An upstream body is only known to be a JSON object: its fields are type-checked here, so
        # an odd shape can never cost the exchange its record.
        response = self.response if isinstance(self.response, dict) else None
        choices = (response or {}).get("choices")
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        finish_reason = first.get("finish_reason")
        usage = (response or {}).get("usage")
        return {
            "schema": SCHEMA,
            "request_id": self.request_id,
            "ts": self.ts,
            "server_id": self.server_id,
            "transport": self.transport,
            "endpoint": ENDPOINT,
            "api_key_hash": self.api_key_hash,
            "model_original": self.model_original,
            "model_mapped": self.model_mapped,
            "provider": self.provider,
            "stream": self.stream,
            "status_code": self.status_code,
            "latency_ms": round(latency, 3),
            "ttft_ms": round((self.first_token - self.started) * 1000, 3) if self.first_token else None,
            "usage": usage if isinstance(usage, dict) else None,
            "finish_reason": finish_reason if isinstance(finish_reason, str) else None,
            "error": self.error,
            "request": self.request,
            "response": response,
        }


class RequestLog:
    """Serialises exchange records and hands them to the background writer."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def write(self, exchange: Exchange) -> None:
        if self.enabled:
            write_request_record(_serialised(exchange.record()))


# The line's newline comes from orjson, in the same buffer: the request log writes these bytes as
# they are, so a record is never copied again (as str, loguru's formatted message, and bytes again,
# a large record was held three or four times over, in UCS-4 when its text had an emoji).
_AS_LINE = orjson.OPT_APPEND_NEWLINE


def _serialised(record: dict) -> bytes:
    """The record as one JSON line, newline included. A body nested deeper than orjson writes (254
    levels; the record adds one) is left out (null), the other body kept, and the app log says so."""
    try:
        return orjson.dumps(record, default=str, option=_AS_LINE)
    except TypeError:
        pass
    for dropped in (("request",), ("response",), ("request", "response")):  # the last always serialises
        try:
            line = orjson.dumps({**record, **dict.fromkeys(dropped)}, default=str, option=_AS_LINE)
            break
        except TypeError:
            continue
    logger.warning(f"request log record without its {' and '.join(dropped)}: nested too deeply to write",
                   request_id=record.get("request_id"))
    return line
