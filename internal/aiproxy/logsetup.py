"""loguru sinks: the app log (JSON lines on stderr and in logs/app.log) and the request log
(one JSON line per exchange in logs/requests/requests-YYYYMMDD-<pid>.jsonl, written by a
background thread so the event loop never blocks on disk). LOG_LEVEL only filters; the
format is always JSON, for the libraries' stdlib `logging` records too (aiohttp, grpc, asyncio).
The files themselves are aiproxy.logfiles'."""

from __future__ import annotations

import errno
import logging
import re
import sys
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from loguru import logger

from aiproxy.config import ConfigError, Settings
from aiproxy.logfiles import (
    QUEUE_CONTEXT,
    AppLogFile,
    GatheringContext,
    LineFile,
    RequestLogFile,
    prune_app_logs,
    prune_request_logs,
)

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


def _is_app_file_record(record) -> bool:
    # A failed app.log write is reported on stderr only: in app.log it would fail again.
    return not record["extra"].get("_request_log", False) and not record["extra"].get("_stderr_only", False)


def prune_interval(keep: timedelta) -> float:
    """How often a running gateway applies the retention: a tenth of it, between 1 s and 1 hour."""
    return min(3600.0, max(1.0, keep.total_seconds() / 10))


def prune_logs(settings: Settings) -> None:
    """Apply the retention to the log files this gateway writes. Start-up and a day's rollover do it
    too, but a gateway idle for days has no rollover, and a retention under a day expires files
    between two rollovers: the cell calls this every prune_interval()."""
    log_dir = Path(settings.log_dir)
    if settings.request_log_enabled:
        prune_request_logs(log_dir / REQUEST_LOG_DIR, settings.request_log_retention)
    if settings.enable_file_logging:
        prune_app_logs(log_dir, settings.request_log_retention)


# A full disk is no reason to refuse to start: the sink tries again at its next line and reports.
_TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT})


def _open_at_start(sink: LineFile, path: str) -> None:
    try:
        sink.open(path)
    except OSError as exc:
        if exc.errno not in _TRANSIENT:
            raise


def configure_logging(settings: Settings, *, stderr: bool = True) -> None:
    """Set up the sinks. A LOG_DIR where the enabled files cannot be written is a ConfigError
    (raised with the stderr sink in place, so the caller can log it)."""
    logger.remove()
    logging.basicConfig(handlers=[_StdlibHandler()], level=logger.level(settings.log_level).no, force=True)
    stderr_sink = {"sink": sys.stderr, "level": settings.log_level, "format": _app_json, "filter": _is_app_record}
    first_stderr = logger.add(**stderr_sink) if stderr else None
    log_dir = Path(settings.log_dir)
    keep = settings.request_log_retention
    request_log = app_log = None
    try:
        # Opened now: a LOG_DIR that cannot be written stops start-up, and a line that a killed
        # predecessor with this pid (PID 1 in a container) left unterminated is ended at once.
        if settings.request_log_enabled:
            requests_dir = log_dir / REQUEST_LOG_DIR
            prune_request_logs(requests_dir, keep)  # first: it may delete this pid's file of today
            request_log = RequestLogFile(requests_dir, keep)
            _open_at_start(request_log, request_log.file_of(datetime.now(UTC)))
        if settings.enable_file_logging:
            app_log = AppLogFile(log_dir / "app.log", keep)
            _open_at_start(app_log, app_log.file)
    except OSError as exc:
        for sink in (request_log, app_log):
            if sink is not None:
                sink.close()
        where = f"{exc.filename}: " if exc.filename else ""
        raise ConfigError(
            f"LOG_DIR={settings.log_dir} cannot be written ({where}{exc.strerror or exc}): set LOG_DIR to a writable"
            " directory, or turn the log files off (ENABLE_FILE_LOGGING=false, REQUEST_LOG_ENABLED=false)"
        ) from None
    # loguru stops sinks in the order they were added (at exit): the request log first, whose thread
    # may report failed writes to the app log while it drains, then the app log, which reports its
    # own on stderr, then stderr, added again last.
    if request_log is not None:
        logger.add(request_log, level=0, format="{message}", filter=_is_request_record, enqueue=True,
                   context=GatheringContext(request_log))
    if app_log is not None:
        logger.add(app_log, level=settings.log_level, format=_app_json, filter=_is_app_file_record, enqueue=True,
                   context=QUEUE_CONTEXT)
    if first_stderr is not None:
        logger.remove(first_stderr)
        logger.add(**stderr_sink)


_request_logger = logger.bind(_request_log=True)


def write_request_record(line: bytes) -> None:
    """Queue one serialised JSON record for the request log: UTF-8 bytes, best with their final
    newline (orjson.OPT_APPEND_NEWLINE; without one it is added, which copies the line). The bytes
    travel beside loguru's message, which stays empty, and reach the file as they are: as the
    message, a record was copied to str, to loguru's formatted text and to bytes again."""
    _request_logger.log("INFO", "", _line=line)  # in the record's extra
