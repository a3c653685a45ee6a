"""Ingest request logs into the store: incremental, idempotent, parallel over files.

Per file: resume at its checkpoint, read complete records, turn them into rows, buffer rows
per partition (bounded by LOGDB_BATCH_ROWS / LOGDB_BATCH_KB and, across partitions, by
LOGDB_MEMORY_MB shared between workers), flush, then move the checkpoint.

Records outside --since/--to are not inserted, and the checkpoint never moves past the first
of them, so a later run without the filter still gets them (the seed lost them for good).
A corrupt record is counted, reported as file:line and skipped; the checkpoint moves past it.
So is an unterminated last record once its file has been idle for IDLE_SECONDS: the gateway
writes each line with one write(), so only a writer that died mid-record leaves one that long.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from aiproxy.logstore import checkpoints
from aiproxy.logstore.damage import PartitionUnreadable, Unreadable, control_file
from aiproxy.logstore.dialogs import assign_pending
from aiproxy.logstore.partitions import control_path, day_of, holding
from aiproxy.logstore.readers import read_jsonl, read_seed_log
from aiproxy.logstore.records import (
    InvalidRecord,
    Row,
    from_gateway_record,
    from_seed_record,
    is_seed_exchange,
)
from aiproxy.logstore.store import Store
from aiproxy.logstore.wal_limit import limit_wal
from aiproxy.logstore.writer import insert_rows, not_held

MAX_PROBLEMS = 100
CHECKPOINT_EVERY = 8 * 1024 * 1024  # bytes between intermediate checkpoints of a long file
IDLE_SECONDS = 60.0  # unchanged this long, a file's unterminated tail is a dead writer's fragment
Progress = Callable[[int], None]  # called with bytes read since the last call


@dataclass
class IngestReport:
    files_scanned: int = 0
    files_ingested: int = 0
    rows_inserted: int = 0
    rows_skipped: int = 0  # decodable but unusable records, plus duplicates of stored rows
    rows_filtered: int = 0  # outside --since/--to; read again by a later run
    records_corrupt: int = 0
    problems: list[str] = field(default_factory=list)  # "file:line: reason", the first MAX_PROBLEMS
    elapsed_s: float = 0.0
    first_day: date | None = None  # earliest partition day that received rows
    # Partitions that could not be written (or read for dedup): their rows stay in the log files,
    # the checkpoints stop before them, and a later run stores them once the file is fixed.
    unreadable: Unreadable = field(default_factory=Unreadable)
    rows_unstored: Counter[Path] = field(default_factory=Counter)  # per partition

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("first_day", "unreadable", "rows_unstored")}
        out["partition_errors"] = {str(e.path): e.reason for e in self.unreadable.errors.values()}
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["rows_per_s"] = round(self.rows_inserted / self.elapsed_s, 1) if self.elapsed_s else 0.0
        return out

    def partition_problems(self) -> list[str]:
        """One line per partition that could not be written, with the rows it left in the logs."""
        lines = []
        for error in self.unreadable.errors.values():
            unstored = self.rows_unstored.get(error.path)
            lost = f"; {unstored} rows for {error.days} were not stored and stay in the request logs" if unstored else ""
            lines.append(f"{error.path}: {error.reason}{lost}: {error.advice}, then ingest again")
        return lines

    def merge(self, other: IngestReport) -> None:
        for name in ("files_scanned", "files_ingested", "rows_inserted", "rows_skipped", "rows_filtered", "records_corrupt"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems.extend(other.problems[: MAX_PROBLEMS - len(self.problems)])
        self.unreadable.update(other.unreadable)
        self.rows_unstored.update(other.rows_unstored)
        if other.first_day and (self.first_day is None or other.first_day < self.first_day):
            self.first_day = other.first_day


# Rotations compressed by logrotate & co. (`x.jsonl.1.gz`): binary, not lines of a log.
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".zip", ".7z")


def is_jsonl(path: Path) -> bool:
    return path.name.endswith(".jsonl") or (".jsonl." in path.name and not _is_compressed(path))


def _is_seed_log(path: Path) -> bool:
    return path.name.endswith(".log") or (".log." in path.name and not _is_compressed(path))


def _is_compressed(path: Path) -> bool:
    return path.name.lower().endswith(_COMPRESSED)


def discover_sources(source: Path) -> list[Path]:
    """Log files under `source` (or `source` itself): gateway *.jsonl and the seed's *.log, *.log.N."""
    source = Path(source).absolute()
    if source.is_file():
        return [source]
    found = []
    for root, _dirs, files in os.walk(source):
        for name in files:
            path = Path(root) / name
            # Regular files only (links followed): a dangling link, a link loop or a FIFO is no log.
            if (is_jsonl(path) or _is_seed_log(path)) and path.is_file():
                found.append(path)
    return sorted(found)


class _Batches:
    """Rows buffered per partition day, flushed by size."""

    def __init__(self, store: Store, budget_bytes: int, report: IngestReport) -> None:
        self.store = store
        self.settings = store.settings
        self.budget = budget_bytes
        self.report = report
        self.rows: dict[date, list[Row]] = {}
        self.sizes: dict[date, int] = {}
        self.total = 0
        self.first: dict[date, checkpoints.Checkpoint] = {}  # the checkpoint before each day's buffered rows
        self.unstored: dict[date, Path] = {}  # days whose partition failed: their rows are not buffered
        self.resume: checkpoints.Checkpoint | None = None  # the file's checkpoint may not pass this

    def add(self, row: Row, before: checkpoints.Checkpoint) -> None:
        """Buffer `row`; `before` is the checkpoint before its record (copied for a day's first row)."""
        day = day_of(row.ts)
        if day in self.unstored:  # after self.resume: read again by the next run
            path = self.unstored[day]
            self.report.rows_unstored[path] += 1
            return
        if day not in self.rows:
            self.first[day] = checkpoints.Checkpoint(before.offset, before.line, before.corrupt)
        self.rows.setdefault(day, []).append(row)
        size = row.size()
        self.sizes[day] = self.sizes.get(day, 0) + size
        self.total += size
        if len(self.rows[day]) >= self.settings.batch_rows or self.sizes[day] >= self.settings.batch_kb * 1024:
            self._flush_day(day)
        elif self.total >= self.budget:
            self.flush()

    def _flush_day(self, day: date) -> None:
        batch = rows = self.rows.pop(day)
        self.total -= self.sizes.pop(day)
        first = self.first.pop(day)
        target = self.store.partition_path(day)
        try:
            for other in holding(self.store.base, day):
                if other != target:
                    with self.store.connected(other) as db:
                        rows = not_held(db.connection(), rows)
            with self.store.connected(target) as db:
                for server_id in {r.values["server_id"] for r in rows}:
                    self.store.note_server(db, server_id)
                inserted = insert_rows(db, rows, fts_enabled=self.settings.fts_enabled)
                limit_wal(db, self.settings)
        except PartitionUnreadable as error:  # nothing of the batch is stored (one transaction)
            self.report.unreadable.note(error)
            self.report.rows_unstored[error.path] += len(batch)
            self.unstored[day] = error.path
            if self.resume is None or first.offset < self.resume.offset:
                self.resume = first
            return
        self.report.rows_inserted += len(inserted)
        self.report.rows_skipped += len(batch) - len(inserted)
        if inserted and (self.report.first_day is None or day < self.report.first_day):
            self.report.first_day = day

    def flush(self) -> None:
        for day in list(self.rows):
            self._flush_day(day)


def _row_of(record, seed_format: bool, server_id: str) -> Row | None:
    """The row of a decoded record; None for the seed's other events (routing, model usage)."""
    if not seed_format:
        return from_gateway_record(record, server_id)
    return from_seed_record(record, server_id) if is_seed_exchange(record) else None


def _idle_size(path: Path) -> int | None:
    """The file's size if it has not changed for IDLE_SECONDS, else None."""
    stat = path.stat()
    return stat.st_size if time.time() - stat.st_mtime >= IDLE_SECONDS else None


def _in_range(ts: int, since: date | None, to: date | None) -> bool:
    day = day_of(ts)
    return (since is None or day >= since) and (to is None or day <= to)


class IngestStopped(Exception):
    """`stopping` was set (a stop signal, another worker's error, the gateway's stop): the file being
    read stops mid-way."""


def ingest_file(
    store: Store,
    path: Path,
    *,
    since: date | None = None,
    to: date | None = None,
    budget_bytes: int,
    progress: Progress | None = None,
    stopping: threading.Event | None = None,
) -> IngestReport:
    """`stopping` set: IngestStopped at the next record; rows not flushed yet are dropped, and the
    checkpoint (saved only when everything before it is stored) makes the next run read them again."""
    report = IngestReport(files_scanned=1)
    control = store.control()
    point = checkpoints.resume_point(control, path)
    reader = read_jsonl if is_jsonl(path) else read_seed_log
    batches = _Batches(store, budget_bytes, report)
    safe = checkpoints.Checkpoint(point.offset, point.line, point.corrupt)
    blocked = False  # a filtered record was seen: the checkpoint stays before it
    last_offset = saved = point.offset
    idle_size = _idle_size(path)  # before reading: a tail that grows after this is waited for
    with open(path, "rb") as stream:
        for item in reader(stream, point.offset, point.line, idle_size):
            if stopping is not None and stopping.is_set():
                raise IngestStopped
            if progress is not None:
                progress(item.end - last_offset)
            last_offset = item.end
            row, error = None, item.error
            if error is None and item.record is not None:
                try:
                    row = _row_of(item.record, reader is read_seed_log, store.server_id)
                except InvalidRecord as exc:
                    report.rows_skipped += 1
                    _problem(report, path, item.line, str(exc))
                except Exception as exc:  # noqa: BLE001 - a shape nobody foresaw must not block every later record
                    error = f"cannot read the record: {type(exc).__name__}: {exc}"
            if error is not None:
                report.records_corrupt += 1
                if not blocked:  # the checkpoint's count covers the records before it
                    safe.corrupt += 1
                _problem(report, path, item.line, error)
            elif row is not None and _in_range(row.ts, since, to):
                batches.add(row, safe)
            elif row is not None:
                report.rows_filtered += 1
                blocked = True
            if not blocked:
                safe.offset, safe.line = item.end, item.lines
            if batches.total == 0 and batches.resume is None and safe.offset - saved >= CHECKPOINT_EVERY:
                checkpoints.save(control, path, safe)  # everything read so far is stored: a crash resumes here
                saved = safe.offset
    batches.flush()
    if batches.resume is not None and batches.resume.offset < safe.offset:
        safe = batches.resume  # rows after it were not stored: the next run reads them again
    if safe.offset != saved or safe.corrupt != point.corrupt:
        checkpoints.save(control, path, safe)
    if report.rows_inserted or report.rows_skipped or report.records_corrupt:
        report.files_ingested = 1
    return report


def _problem(report: IngestReport, path: Path, line: int, reason: str) -> None:
    if len(report.problems) < MAX_PROBLEMS:
        report.problems.append(f"{path}:{line}: {reason}")


def ingest(
    store: Store,
    source: Path,
    *,
    since: date | None = None,
    to: date | None = None,
    progress: Progress | None = None,
    files: list[Path] | None = None,
    stopping: threading.Event | None = None,
) -> IngestReport:
    """Ingest every log file under `source`; then thread new rows into dialogs when grouping is on.
    A control DB SQLite cannot use is ControlUnreadable (partition errors are handled per partition).
    `stopping`, once set, ends the run at each worker's next record (IngestStopped)."""
    with control_file(control_path(store.base)):
        started = time.perf_counter()
        files = discover_sources(source) if files is None else files
        store.note_server(store.control(), store.server_id)  # the seed's row: whose checkpoints these are
        workers = max(1, min(store.settings.import_parallelism, len(files)))
        budget = store.settings.memory_mb * 1024 * 1024 // (2 * workers)  # half for buffers, half for everything else
        total = IngestReport()
        lock = threading.Lock()
        stopping = stopping if stopping is not None else threading.Event()

        def run(path: Path) -> None:
            try:
                part = ingest_file(store, path, since=since, to=to, budget_bytes=budget, progress=progress,
                                   stopping=stopping)
            except FileNotFoundError:
                if path.exists():
                    raise
                # Listed, then removed (log retention runs beside ingest): the others still go in.
                part = IngestReport(problems=[f"{path}: no longer there (removed while ingest ran?)"])
            with lock:
                total.merge(part)

        if workers == 1:
            for path in files:
                run(path)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="logdb-ingest") as pool:
                try:
                    list(pool.map(run, files))
                except BaseException:
                    # Ctrl-C, SIGTERM or one file's error: the files not started are cancelled, and the
                    # running ones must not be read to their end (minutes for a large log) before exit.
                    stopping.set()
                    raise
        if store.settings.grouping_enabled and total.first_day is not None:
            assign_pending(store, since=total.first_day, unreadable=total.unreadable)
        total.problems[:0] = total.partition_problems()
        total.elapsed_s = time.perf_counter() - started
        return total
