"""The log files behind loguru's sinks (aiproxy.logsetup wires them): whole lines in unbuffered
`os.write`s (the request log's gathered while its writer thread lingers), never onto an
unterminated tail (a line cut off by a full disk or a killed process stays a line of its own), and
a failed write is one rate-limited JSON line in the app log instead of loguru's stderr dump of the
record (which holds prompts and answers). Also the hand-off from loguru's `enqueue` to the files'
writer threads, and the retention of the files."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.context import BaseContext
from pathlib import Path

from loguru import logger

APP_LOG_ROTATION_BYTES = 100 * 1024 * 1024
REPORT_EVERY_S = 60.0  # at most one line per sink and interval about its failed writes
# The request log's writer thread: how long it lets records gather after writing all it had (a
# record reaches its file at most this much later), and the most it gathers before writing.
WRITER_LINGER_S = 0.01
MAX_GATHERED_BYTES = 256 * 1024


class WriteFailures:
    """A sink's failed writes, told as one app log line at once and then at most one per
    REPORT_EVERY_S, each with the number of records dropped since the previous line; the
    first good write after failures says so (within the same limit), and stop() tells what
    is still untold."""

    def __init__(self, what: str, report: Callable[..., None], clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._report = report
        self._clock = clock
        self._last = float("-inf")
        self.dropped = 0  # records dropped since the last line
        self.failing = False  # the last write failed
        self._untold = False  # a failure or a recovery not reported yet
        self._error = ""
        self._path = ""

    def failed(self, path: str, error: BaseException, records: int = 1) -> None:
        self.dropped += records
        self.failing = self._untold = True
        self._path = path
        # The OS error says what went wrong (ENOSPC, EROFS); anything else by its type only: its
        # text could quote the record.
        self._error = str(error) if isinstance(error, OSError) else type(error).__name__
        self._tell(force=False)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self._untold = True
        if self._untold:  # a recovery inside the interval is told at the first write after it
            self._tell(force=False)

    def stop(self) -> None:
        self._tell(force=True)

    def _tell(self, *, force: bool) -> None:
        now = self._clock()
        if not self._untold or (not force and now - self._last < REPORT_EVERY_S):
            return
        if self.failing:
            self._report("ERROR", f"{self.what} write failed: {self._error}", file=self._path, dropped=self.dropped)
        else:
            self._report("WARNING", f"{self.what} writes resumed", file=self._path, dropped=self.dropped)
        self._last, self.dropped, self._untold = now, 0, False


def _report_in_app_log(level: str, message: str, **fields) -> None:
    logger.bind(_logger=__name__, **fields).log(level, message)


def _report_on_stderr(level: str, message: str, **fields) -> None:
    logger.bind(_logger=__name__, _stderr_only=True, **fields).log(level, message)


class LineFile:
    """A loguru sink appending whole lines to a file, for a single writer thread (loguru's
    `enqueue`). Each line is one `os.write` on an O_APPEND descriptor: no buffer keeps half a
    line after a failure to write it later, and the lines of several processes sharing a file
    (app.log with --workers) do not interleave. A line never lands on an unterminated tail:
    when the file is opened, and after a failed write, a missing final newline is written
    first, so a fragment left by a full disk or a killed process stays a (corrupt) line of its
    own. (In app.log, shared by the workers, that check can see another worker's line half
    written, as the kernel grows a file page by page, and add a blank line: the price of never
    joining two lines.) A failed write drops that line, is told by `WriteFailures`, and never
    raises: loguru would print the whole record on stderr.

    After `gather()`, write() keeps the lines and write_gathered() writes them, still whole lines, in one
    `os.write` (a GatheringQueue calls write_gathered() whenever its writer thread would wait)."""

    FILE_MODE = 0o666  # created with these permissions, less the umask's
    DIR_MODE = 0o777

    def __init__(self, what: str, report: Callable[..., None]) -> None:
        self.failures = WriteFailures(what, report)
        self._fd: int | None = None
        self._path = ""
        self._tail_unknown = False
        self._gathered: list[bytes] | None = None  # None: each line is written at once
        self._gathered_path = ""
        self._gathered_bytes = 0
        self._written = 0

    def _path_for(self, message) -> str:
        raise NotImplementedError

    def _before_write(self, size: int) -> None:
        """Rotation: called with the file open, before a line of `size` bytes goes in."""

    def open(self, path: str) -> None:
        """Open `path` for appending (creating it and its directory), then end its last line if
        it has none. Raises OSError; when only that newline failed, the file is open and the
        next write tries it again."""
        self.close()
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=self.DIR_MODE)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.FILE_MODE)
        self._fd, self._path, self._tail_unknown = fd, path, True
        self._end_last_line()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _end_last_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            self._write_all(b"\n")
        self._tail_unknown = False

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        self._written = 0  # how much of `data` is in the file when a write fails
        while view:
            written = os.write(self._fd, view)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
            self._written += written

    def _data(self, message) -> bytes:
        """The bytes of the line loguru hands over (its formatted message, newline included)."""
        return message.encode("utf-8", "replace")

    def write(self, message: str) -> None:
        data, path = self._data(message), self._path_for(message)
        if self._gathered is None:
            self._write_lines(path, data, 1)
            return
        if self._gathered and (path != self._gathered_path or self._gathered_bytes + len(data) >= MAX_GATHERED_BYTES):
            self.write_gathered()  # a new day's file, or no room: the lines before first
        self._gathered.append(data)
        self._gathered_path = path
        self._gathered_bytes += len(data)
        if self._gathered_bytes >= MAX_GATHERED_BYTES:
            self.write_gathered()  # a large record goes alone, never copied into a batch

    def gather(self) -> None:
        self._gathered = []

    def write_gathered(self) -> None:
        """Write the lines gathered so far. (Not `flush`: loguru calls a sink's flush after each line.)"""
        if self._gathered:
            lines = self._gathered
            data = lines[0] if len(lines) == 1 else b"".join(lines)
            self._gathered, self._gathered_bytes = [], 0
            self._write_lines(self._gathered_path, data, len(lines))

    def _write_lines(self, path: str, data: bytes, count: int) -> None:
        self._written = 0
        try:
            if self._fd is None or path != self._path:
                self.open(path)
            self._before_write(len(data))
            if self._tail_unknown:
                self._end_last_line()
            self._write_all(data)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the records are dropped and the gateway serves on
            self._tail_unknown = True  # part of the lines may be in the file
            # A full disk takes a gathered batch from its middle: the lines before the cut are in the file.
            self.failures.failed(path, exc, count - data.count(b"\n", 0, self._written))
            return
        self.failures.succeeded()

    def stop(self) -> None:
        self.write_gathered()
        self.close()
        self.failures.stop()


class RequestLogFile(LineFile):
    """requests-YYYYMMDD-<pid>.jsonl, by the UTC day of each record; on a new day the next file
    is opened and the request logs past retention are deleted (every process's). They hold every
    prompt and answer: the files (and the directory, when created here) are their owner's only."""

    FILE_MODE = 0o600
    DIR_MODE = 0o700

    def __init__(self, directory: Path, keep: timedelta) -> None:
        super().__init__("request log", _report_in_app_log)
        self.directory = directory
        self.keep = keep
        self._pid = os.getpid()
        self._day = (0.0, 0.0, "")  # [start, end) in epoch seconds of the last record's UTC day, its file

    def _data(self, message) -> bytes:
        # The record's own bytes (write_request_record), taken out of the loguru record, which
        # loguru's writer thread keeps until the next record arrives.
        data = message.record["extra"].pop("_line")
        return data if data.endswith(b"\n") else data + b"\n"

    def file_of(self, moment: datetime) -> str:
        return str(self.directory / f"requests-{moment.astimezone(UTC):%Y%m%d}-{self._pid}.jsonl")

    def _path_for(self, message) -> str:
        record = getattr(message, "record", None)
        moment = record["time"] if record is not None else datetime.now(UTC)
        stamp = moment.timestamp()
        start, end, path = self._day
        if not start <= stamp < end:
            start = stamp - stamp % 86400  # UTC days are 86400 s in epoch time
            path = self.file_of(moment)
            self._day = (start, start + 86400, path)
        return path

    def _before_write(self, size: int) -> None:
        # A file deleted while open (`rm logs/requests/*`) would take every record until the next
        # UTC day with it: one fstat per line notices, and the file is created again.
        if os.fstat(self._fd).st_nlink == 0:
            self.open(self._path)

    def open(self, path: str) -> None:
        rotating = bool(self._path) and path != self._path
        super().open(path)
        if rotating:
            with contextlib.suppress(OSError):
                prune_request_logs(self.directory, self.keep)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class AppLogFile(LineFile):
    """app.log, shared by the workers: renamed to app.<time>.log past APP_LOG_ROTATION_BYTES
    (loguru's naming), by whichever process gets there first; the others notice the rename
    and reopen. Rotated files older than the retention are deleted."""

    def __init__(self, path: Path, keep: timedelta) -> None:
        super().__init__("app log", _report_on_stderr)
        self.file = str(path)
        self.keep = keep

    def _path_for(self, message) -> str:
        return self.file

    def open(self, path: str) -> None:
        super().open(path)
        self._opened = os.fstat(self._fd)

    def _before_write(self, size: int) -> None:
        # One stat per line: the path still names the file opened (else another worker rotated it,
        # or someone removed it), and its size is the size every worker appends to.
        current = _stat_or_none(self.file)
        if current is None or not os.path.samestat(current, self._opened):
            self.open(self.file)
        elif current.st_size and current.st_size + size > APP_LOG_ROTATION_BYTES:
            # Workers reaching the limit together take turns on the file's lock; whoever comes
            # second finds app.log renamed already and only reopens it.
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if (now := _stat_or_none(self.file)) is not None and os.path.samestat(now, self._opened):
                    stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H-%M-%S_%f")
                    os.rename(self.file, str(Path(self.file).with_name(f"app.{stamp}.log")))
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.open(self.file)
            self._prune()

    def _prune(self) -> None:
        prune_app_logs(Path(self.file).parent, self.keep)


class ThreadQueueContext(BaseContext):
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


QUEUE_CONTEXT = ThreadQueueContext()


class GatheringQueue:
    """The queue from loguru's `enqueue` to its writer thread, for a sink that gathers lines
    (`LineFile.gather`). When the writer finds the queue empty, the sink writes what it gathered
    in one os.write, and the writer sleeps WRITER_LINGER_S before it waits: records logged
    meanwhile are taken without waking it. Woken for each record, and writing each alone, the
    writer thread cost the event loop's thread ~0.15 ms per request at c=64 (the GIL changing
    hands several times a record): 8-10 % of a call's CPU (docs/benchmarks.md)."""

    def __init__(self, sink: LineFile) -> None:
        self._queue = queue.SimpleQueue()
        self._sink = sink
        self.put = self._queue.put

    def get(self):
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            self._sink.write_gathered()
            time.sleep(WRITER_LINGER_S)
            item = self._queue.get()
        if not isinstance(item, str):  # loguru's True (logger.complete()) or None (stop): all is written first
            self._sink.write_gathered()
        return item


class GatheringContext(ThreadQueueContext):
    def __init__(self, sink: LineFile) -> None:
        sink.gather()
        self._sink = sink

    def SimpleQueue(self):  # noqa: N802
        return GatheringQueue(self._sink)


def prune_request_logs(directory: Path, keep: timedelta) -> None:
    """Delete the request log files of every process, this one's and earlier ones', last written
    more than `keep` ago. A retention of this process's files alone (loguru's, once) would leave
    the files of every earlier process: the names carry the pid. Today's (UTC) files are kept
    whatever the retention: another worker may still be writing one, idle for a while."""
    cutoff = time.time() - keep.total_seconds()
    today = f"requests-{datetime.now(UTC):%Y%m%d}-"
    for path in directory.glob("requests-*-*.jsonl"):
        if path.name.startswith(today):
            continue
        # Gone (another worker pruned it first) or not deletable: the others are still pruned.
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


def prune_app_logs(directory: Path, keep: timedelta) -> None:
    """Delete the rotated app.<time>.log files last written more than `keep` ago."""
    cutoff = time.time() - keep.total_seconds()
    for path in directory.glob("app.*.log"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
