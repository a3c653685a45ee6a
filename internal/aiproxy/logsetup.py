"""loguru sinks: the app log (JSON lines on stderr and in logs/app.log) and the request log
(one JSON line per exchange in logs/requests/requests-YYYYMMDD-<pid>.jsonl, written by a
background thread so the event loop never blocks on disk). LOG_LEVEL only filters; the
format is always JSON, for the libraries' stdlib `logging` records too (aiohttp, grpc, asyncio)."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sys
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from multiprocessing.context import BaseContext
from pathlib import Path

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from loguru import logger

from aiproxy.config import Settings

REQUEST_LOG_DIR = "requests"


def _app_json(record) -> str:
    entry = {
        "ts": record["time"].astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "level": record["level"].name,
        "msg": record["message"],
        "logger": record["extra"].get("_logger") or record["name"],
        "pid": record["process"].id,
    }
    extra = {k: v for k, v in record["extra"].items() if not k.startswith("_")}
    if extra:
        entry.update(extra)
    if record["exception"] is not None:
        kind, value, trace = record["exception"]
        entry["exception"] = repr(value)
        entry["traceback"] = "".join(traceback.format_exception(kind, value, trace))
    record["extra"]["_json"] = orjson.dumps(entry, default=str).decode()
    return "{extra[_json]}\n"


# Library messages may quote raw request bytes (aiohttp's parser errors print the offending header
# line): whatever follows these words on a line is cut.
_SECRET_TAIL = re.compile(r"(?i)\b(authorization|bearer)\b[^\r\n]*")


def _redact(text: str) -> str:
    return _SECRET_TAIL.sub(r"\1 [redacted]", text)


class _StdlibHandler(logging.Handler):
    """stdlib `logging` -> the JSON app log, redacted. A malformed request from a client (aiohttp's
    HttpProcessingError) is its problem, not the operator's: DEBUG, without the raw bytes."""

    def emit(self, record: logging.LogRecord) -> None:
        bound = logger.bind(_logger=record.name)
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            bound.debug(_redact(record.getMessage()), error=type(error).__name__, status=error.code)
            return
        if error is not None:
            bound = bound.bind(exception=_redact(repr(error)),
                               traceback=_redact("".join(traceback.format_exception(*record.exc_info))))
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        bound.log(level, _redact(record.getMessage()))


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


class _ThreadQueueContext(BaseContext):
    """loguru's `enqueue=True` with an in-process queue. loguru's writer thread still does every
    write off the event loop, but the hand-off is a `queue.SimpleQueue` instead of the default
    multiprocessing pipe, which pickles each record, writes it through a pipe and unpickles it in
    the thread (~50-90 us of CPU per record). Safe because nothing logs across processes here:
    each worker is spawned and calls configure_logging itself, with its own files."""

    _name = "thread"

    def SimpleQueue(self):  # noqa: N802 - loguru calls the multiprocessing context's names
        return queue.SimpleQueue()

    def Event(self):  # noqa: N802
        return threading.Event()

    def Lock(self):  # noqa: N802
        return threading.Lock()


_QUEUE_CONTEXT = _ThreadQueueContext()


def request_log_path(log_dir: str | Path) -> str:
    # loguru fills {time} when it opens a file, so each rotation gets the new date.
    return str(Path(log_dir) / REQUEST_LOG_DIR / f"requests-{{time:YYYYMMDD!UTC}}-{os.getpid()}.jsonl")


def prune_request_logs(directory: Path, keep: timedelta) -> None:
    """Delete the request log files of every process, this one's and earlier ones', last written
    more than `keep` ago. loguru's own retention only sees this process's files: the names carry
    the pid, so every restart used to leave files that were never removed."""
    cutoff = time.time() - keep.total_seconds()
    for path in directory.glob("requests-*-*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # another worker pruned it first
            if path.stat().st_mtime < cutoff:
                path.unlink()


def configure_logging(settings: Settings, *, stderr: bool = True) -> None:
    logger.remove()
    logging.basicConfig(handlers=[_StdlibHandler()], level=logger.level(settings.log_level).no, force=True)
    if stderr:
        logger.add(sys.stderr, level=settings.log_level, format=_app_json, filter=_is_app_record, enqueue=False)
    log_dir = Path(settings.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    if settings.enable_file_logging:
        logger.add(
            str(log_dir / "app.log"),
            level=settings.log_level,
            format=_app_json,
            filter=_is_app_record,
            enqueue=True,
            context=_QUEUE_CONTEXT,
            rotation="100 MB",
            retention=settings.request_log_retention,
        )
    if settings.request_log_enabled:
        requests_dir = log_dir / REQUEST_LOG_DIR
        requests_dir.mkdir(parents=True, exist_ok=True)
        prune_request_logs(requests_dir, settings.request_log_retention)
        logger.add(
            request_log_path(log_dir),
            level=0,
            format="{message}",
            filter=_is_request_record,
            enqueue=True,
            context=_QUEUE_CONTEXT,
            rotation=_UtcDailyRotation(),
            retention=lambda _own_files: prune_request_logs(requests_dir, settings.request_log_retention),
            encoding="utf-8",
        )


_request_logger = logger.bind(_request_log=True)


def write_request_record(line: str) -> None:
    """Queue one serialised JSON record (no trailing newline: loguru adds it) for the request log."""
    _request_logger.log("INFO", line)
