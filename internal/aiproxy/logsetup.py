"""loguru sinks: the app log (JSON lines on stderr and in logs/app.log) and the request log
(one JSON line per exchange in logs/requests/requests-YYYYMMDD-<pid>.jsonl, written by a
background thread so the event loop never blocks on disk). LOG_LEVEL only filters; the
format is always JSON."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
from loguru import logger

from aiproxy.config import Settings

REQUEST_LOG_DIR = "requests"


def _app_json(record) -> str:
    entry = {
        "ts": record["time"].astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "level": record["level"].name,
        "msg": record["message"],
        "logger": record["name"],
        "pid": record["process"].id,
    }
    extra = {k: v for k, v in record["extra"].items() if not k.startswith("_")}
    if extra:
        entry.update(extra)
    if record["exception"] is not None:
        entry["exception"] = repr(record["exception"].value)
    record["extra"]["_json"] = orjson.dumps(entry, default=str).decode()
    return "{extra[_json]}\n"


def _is_request_record(record) -> bool:
    return record["extra"].get("_request_log", False)


def _is_app_record(record) -> bool:
    return not record["extra"].get("_request_log", False)


class _UtcDailyRotation:
    """Rotate when the UTC date changes (loguru's "00:00" would use local time)."""

    def __init__(self) -> None:
        self._day = datetime.now(UTC).date()

    def __call__(self, message, file) -> bool:
        day = message.record["time"].astimezone(UTC).date()
        if day != self._day:
            self._day = day
            return True
        return False


def request_log_path(log_dir: str | Path) -> str:
    # loguru fills {time} when it opens a file, so each rotation gets the new date.
    return str(Path(log_dir) / REQUEST_LOG_DIR / f"requests-{{time:YYYYMMDD!UTC}}-{os.getpid()}.jsonl")


def configure_logging(settings: Settings, *, stderr: bool = True) -> None:
    logger.remove()
    if stderr:
        logger.add(sys.stderr, level=settings.log_level, format=_app_json, filter=_is_app_record, enqueue=False)
    log_dir = Path(settings.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    logger.add(
        str(log_dir / "app.log"),
        level=settings.log_level,
        format=_app_json,
        filter=_is_app_record,
        enqueue=True,
        rotation="100 MB",
        retention=settings.request_log_retention,
    )
    if settings.request_log_enabled:
        (log_dir / REQUEST_LOG_DIR).mkdir(parents=True, exist_ok=True)
        logger.add(
            request_log_path(log_dir),
            level=0,
            format="{message}",
            filter=_is_request_record,
            enqueue=True,
            rotation=_UtcDailyRotation(),
            retention=settings.request_log_retention,
            encoding="utf-8",
        )


_request_logger = logger.bind(_request_log=True)


def write_request_record(line: str) -> None:
    """Queue one serialised JSON record (no trailing newline: loguru adds it) for the request log."""
    _request_logger.log("INFO", line)
