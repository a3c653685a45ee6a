"""Partition files SQLite cannot read or change (truncated, zero-filled, not a database, damaged
pages, no permission, read-only): the one place that recognises those errors and names the file.

`Store.connected` turns such an error, wherever it surfaces in a partition's unit of work (opening
it, a query, a write), into PartitionUnreadable naming that partition. Operations over many
partitions pass an `Unreadable` and wrap each partition's work in `unreadable.skip()`: the
partition is left out and noted, the others are still read (a search, a listing) or processed
(`fts build`, `dialogs assign`); callers report what was noted (CLI lines, the replies'
`warnings`). Without an `Unreadable` the error is raised: a read of one partition
that cannot be answered is DATA_LOSS / 500, naming the day, never the server's file path.

Nothing here checks a file in advance: errors are caught where SQLite reports them, so the hot
paths pay nothing, and a damaged file is never modified, repaired or removed.

A file error is not always damage: a file or directory this process may not write (a read-only
mount, another user's store) makes SQLite fail as well. Once an error is caught, `access_problem`
looks at the file system to tell the two apart, so the advice fits: "restore it from a backup" for
damage, "make it writable (or readable)" when the file is fine but out of reach.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc

from aiproxy.errors import GatewayError
from aiproxy.logstore import partitions

# Primary SQLite result codes that say the file itself cannot be used. Anything else (a locked
# database, a full disk, an SQL error from a bug) is not about the file and propagates as before:
# "restore it from a backup" would be the wrong advice for those.
_FILE_CODES = frozenset({
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_NOTADB,
})
# The codes a file that is fine but out of reach (read-only, no permission) gives; any other says the
# file is damaged, whatever its permissions (a corrupt file on a read-only mount is still corrupt).
_ACCESS_CODES = frozenset({sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN})
ADVICE = "it was left as it is: restore it from a backup (logdb bundle import) or move it out of the log store"
READ_ONLY_ADVICE = (
    "the file is not damaged by this and was left as it is: reading commands read it as it is;"
    " to change it (ingest, fts build, dialogs assign, bundle import) make it and its directory writable"
    " for this user, or copy the store to a writable place"
)
NO_READ_ADVICE = "the file was left as it is: give this user read permission on it (or run as its owner)"
MAX_WARNINGS = 10  # named in a reply; more are counted in one last warning


def sqlite_error(exc: BaseException) -> sqlite3.Error | None:
    """The sqlite3 error behind `exc` (peewee wraps it: `.orig`, and the implicit context)."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__context__):
        if isinstance(candidate, sqlite3.Error):
            return candidate
    return None


def sqlite_code(exc: BaseException) -> int | None:
    """The primary SQLite result code behind `exc` (extended codes masked), if it has one."""
    code = getattr(sqlite_error(exc), "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_access_error(exc: BaseException) -> bool:
    """Whether `exc` is SQLite failing in a way a read-only or unreadable (but sound) file explains."""
    return sqlite_code(exc) in _ACCESS_CODES


def is_file_error(exc: BaseException) -> bool:
    """Whether `exc` is SQLite saying a file cannot be read or changed."""
    return sqlite_code(exc) in _FILE_CODES


def access_problem(path: Path) -> tuple[str, str] | None:
    """Why this process cannot use `path` though the file itself may be fine, with the advice for
    it; None when permissions and the file system allow reading and writing it (then a file error
    is damage). Asked only after SQLite failed: never on a hot path."""
    path = Path(path)
    if not path.is_file():  # missing, a directory in its place: damage, or a new file (below)
        if path.exists() or not path.parent.is_dir() or _writable(path.parent):
            return None
        return f"its directory {path.parent} {_read_only_why(path.parent)}: the file cannot be created", READ_ONLY_ADVICE
    if not os.access(path, os.R_OK):
        return "this user has no read permission for the file", NO_READ_ADVICE
    if not _writable(path):
        return f"the file {_read_only_why(path)}", READ_ONLY_ADVICE
    if not _writable(path.parent):
        # SQLite writes its -wal and -shm files next to a WAL database, even to read it.
        return f"its directory {_read_only_why(path.parent)} (SQLite keeps the -wal and -shm files there)", READ_ONLY_ADVICE
    return None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)  # False on a read-only file system, even for root


def _read_only_why(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "is read-only: its file system is mounted read-only"
    except OSError:
        pass
    return "is read-only for this user"


def label(path: Path) -> str:
    """The days a partition file holds, as a client may see them: `2025-09-06`, a week's or a
    month's `first..last` (the file name says which)."""
    span = partitions.partition_span(Path(path).name)
    if span is None:
        return Path(path).name
    first, last = span
    return str(first) if first == last else f"{first}..{last}"


def _diagnosis(path: Path, exc: BaseException) -> tuple[str, str | None]:
    """SQLite's words for `exc`; when the file is fine but out of reach (read-only, no permission),
    with why, and the advice for that rather than the damaged file's (None)."""
    error = sqlite_error(exc)
    reason = str(error if error is not None else exc)
    problem = access_problem(path) if is_access_error(exc) else None
    if problem is None:
        return reason, None
    why, advice = problem
    return f"{reason} ({why})", advice


class PartitionUnreadable(GatewayError):
    """One partition file SQLite cannot read or change. DATA_LOSS over gRPC, 500 over REST (the
    client asked for nothing wrong); the message names the days and the file name, not its path."""

    error_type = "server_error"
    default_code = "partition_unreadable"

    def __init__(self, path: Path, reason: str, *, lead: str | None = None, advice: str = ADVICE) -> None:
        self.path = Path(path)
        self.reason = reason
        self.advice = advice
        self.days = label(self.path)
        lead = lead or ("The log store cannot use" if advice != ADVICE else "The log store cannot read")
        super().__init__(f"{lead} the partition for {self.days} ({self.path.name}): {reason}; {advice}")

    @classmethod
    def of(cls, path: Path, exc: BaseException) -> PartitionUnreadable:
        reason, advice = _diagnosis(path, exc)
        return cls(path, reason, advice=advice or ADVICE)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DATA_LOSS

    def warning(self, *, local: bool = False) -> str:
        """One line saying this partition was left out: with its path for the local CLI, else
        with its days and file name (what a remote client may see)."""
        where = str(self.path) if local else f"the partition for {self.days} ({self.path.name})"
        return f"skipped {where}: {self.reason}; {self.advice}"


class StoreBusy(GatewayError):
    """A store file another process kept locked for writing beyond the busy timeout (a long `merge`,
    a rebuild's optimize of a large index). Not damage: the same command
    succeeds once that write is done. UNAVAILABLE over gRPC, 503 over REST: worth a retry."""

    http_status = 503
    error_type = "server_error"
    default_code = "log_store_busy"

    CAUSE = ("stayed locked by another process's write (a long `logdb fts rebuild`, `merge` or `bundle import`)"
             " for longer than LOGDB_BUSY_TIMEOUT_MS")
    ADVICE = ("nothing is damaged and what this command committed stays: run it again once that write is done,"
              " or raise LOGDB_BUSY_TIMEOUT_MS")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path.name} {self.CAUSE}; {self.ADVICE}")  # the name only, as for a damaged partition


def _raise_busy(path: Path, exc: BaseException) -> None:
    """StoreBusy naming `path` when `exc` is SQLite giving up on another connection's lock."""
    if not isinstance(exc, StoreBusy) and sqlite_code(exc) == sqlite3.SQLITE_BUSY:
        raise StoreBusy(path) from exc


@contextlib.contextmanager
def converted(path: Path) -> Iterator[None]:
    """Inside: a file error becomes PartitionUnreadable naming `path`, a lock held too long StoreBusy."""
    try:
        yield
    except PartitionUnreadable:
        raise
    except Exception as exc:
        _raise_busy(path, exc)
        if not is_file_error(exc):
            raise
        raise PartitionUnreadable.of(path, exc) from exc


class ControlUnreadable(GatewayError):
    """The control DB (ingest checkpoints) SQLite cannot read or change. Ingest cannot go on without
    it, so it fails, naming the file (its name only, as for a partition); DATA_LOSS over gRPC."""

    error_type = "server_error"
    default_code = "control_unreadable"

    ADVICE = ("it was left as it is: move it out of the log store and ingest again (the request logs are then"
              " read from their start; rows already stored are not stored twice)")

    def __init__(self, path: Path, reason: str, advice: str = ADVICE) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"The log store cannot use its ingest checkpoints ({self.path.name}): {reason}; {advice}")

    @classmethod
    def of(cls, path: Path, exc: BaseException) -> ControlUnreadable:
        reason, advice = _diagnosis(path, exc)  # a read-only store: moving the file out would not help
        return cls(path, reason, advice or cls.ADVICE)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DATA_LOSS


@contextlib.contextmanager
def control_file(path: Path) -> Iterator[None]:
    """Inside: a file error (or lock held too long) that no partition claimed is the control DB's."""
    try:
        yield
    except (PartitionUnreadable, ControlUnreadable):
        raise
    except Exception as exc:
        _raise_busy(path, exc)
        if not is_file_error(exc):
            raise
        raise ControlUnreadable.of(path, exc) from exc


class Unreadable:
    """The partitions an operation left out because they cannot be read (or changed), in the
    order met, each once."""

    def __init__(self) -> None:
        self.errors: dict[Path, PartitionUnreadable] = {}

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, Path)) and Path(path).absolute() in self.errors

    def note(self, error: PartitionUnreadable) -> None:
        self.errors.setdefault(error.path.absolute(), error)

    def update(self, other: Unreadable) -> None:
        """Note every partition `other` noted (a sub-operation's, e.g. one ingest worker's)."""
        for error in other.errors.values():
            self.note(error)

    @contextlib.contextmanager
    def skip(self) -> Iterator[None]:
        """Wrap one partition's work: if the partition cannot be read, the rest of the block is
        skipped and the partition noted. Other errors propagate."""
        try:
            yield
        except PartitionUnreadable as error:
            self.note(error)

    def overlaps(self, first_day, last_day) -> bool:
        """Whether a noted partition holds a day of [first_day, last_day]."""
        for path in self.errors:
            span = partitions.partition_span(path.name)
            if span is not None and span[0] <= last_day and span[1] >= first_day:
                return True
        return False

    def warnings(self, *, local: bool = False) -> list[str]:
        errors = list(self.errors.values())
        lines = [e.warning(local=local) for e in errors[:MAX_WARNINGS]]
        if len(errors) > MAX_WARNINGS:
            lines.append(f"skipped {len(errors) - MAX_WARNINGS} more partitions that cannot be read")
        return lines

    def not_found(self, what: str) -> PartitionUnreadable:
        """The error for an id not found while partitions were left out: it may be in one of them,
        so NOT_FOUND would be wrong. Names the first such partition (and how many there are)."""
        first = next(iter(self.errors.values()))
        more = f" (and {len(self.errors) - 1} more partitions)" if len(self.errors) > 1 else ""
        return PartitionUnreadable(
            first.path, first.reason + more, advice=first.advice,
            lead=f"{what} is not in the readable partitions; the log store cannot read",
        )


def skipping(unreadable: Unreadable | None) -> contextlib.AbstractContextManager:
    """`unreadable.skip()`; with None, a block that lets PartitionUnreadable through (strict)."""
    return unreadable.skip() if unreadable is not None else contextlib.nullcontext()

