"""`bundle verify`: one streaming pass over the archive, checking every member against
metadata.json (sha256 and bytes), reporting missing and unlisted members and refusing unsafe
ones (absolute paths, `..`, links, devices). Nothing is ever extracted under a member's own
name: the importer asks for db/ members to be staged under generated names in its own directory.

Outcomes: ok; bad (a readable archive whose content cannot be trusted, including a missing or
broken metadata.json); UnusableInput (missing file, not gzip, truncated or corrupt stream);
NoSpace (when staging: a member would not fit on the store's disk, keeping a spare of
min(256 MiB, 5 % of the disk); nothing of it is written).
"""

from __future__ import annotations

import errno
import gzip
import shutil
import sqlite3
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiproxy.logstore.bundles.manifest import (
    METADATA,
    BundleError,
    FileEntry,
    NoSpace,
    ProgressReader,
    UnusableInput,
    copy_hashing,
    is_partition_member,
    parse_metadata,
    unsafe_reason,
)
from aiproxy.logstore.damage import sqlite_code

_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MAX_METADATA_BYTES = 64 * 1024 * 1024
MAX_SPARE_BYTES = 256 * 1024 * 1024  # left free on the disk an import stages on...
SPARE_SHARE = 20  # ...or 1/20 (5 %) of that disk's size when less: small volumes stay usable
MAX_MEMBERS = 100_000  # years of daily partitions and raw log files; each costs memory while scanned
MAX_TAR_HEADER_BYTES = 1024 * 1024  # a GNU long name or a PAX header: bundles' are a few hundred bytes
_EXTENDED_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                     tarfile.SOLARIS_XHDTYPE)


class _BoundedTarInfo(tarfile.TarInfo):
    """Headers read with bounded memory. tarfile reads a GNU long name or a PAX header into memory
    whole, and a GNU sparse map block by block, whatever size the archive declares: a few MB of
    gzip declaring gigabytes of either exhausted memory before any member was checked. Bundles
    hold no sparse files and no names near the bound, so both are refused before they are read."""

    def _proc_member(self, tar):
        if self.type in _EXTENDED_HEADERS and self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.HeaderError(f"an extended header of {self.size:,} bytes (at most {MAX_TAR_HEADER_BYTES:,})")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.HeaderError("a sparse member")
        return super()._proc_member(tar)

    def _proc_gnusparse_10(self, next, pax_headers, tar):  # noqa: A002 (tarfile's signature)
        raise tarfile.HeaderError("a sparse member")


@dataclass
class ScanReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    entries: dict[str, FileEntry] = field(default_factory=dict)
    staged: dict[str, Path] = field(default_factory=dict)  # db/ member -> staged copy

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        meta = self.metadata or {}
        keys = ("bundle_id", "created_at", "server_id", "schema_version", "since", "to", "rows")
        return {
            "bundle": str(self.path),
            "ok": self.ok,
            "problems": self.problems,
            "members": len(self.entries),
            **{k: meta.get(k) for k in keys},
        }


def _member_kind(member: tarfile.TarInfo) -> str | None:
    """What makes a member something other than a plain file (None for a plain file)."""
    if member.isreg():
        return None
    if member.issym() or member.islnk():
        return f"a link to {member.linkname!r}"
    return "a directory" if member.isdir() else "a device, FIFO or other special file"


def scan_bundle(
    path: Path, stage_dir: Path | None = None, progress: Callable[[int], None] | None = None, *, label: str = ""
) -> ScanReport:
    """Check a bundle; with `stage_dir`, also copy its partition members there (for import).
    `progress(n)` is told of every n bytes of the archive read. Messages call the bundle `label`
    (default: its path): a server names an upload as its client knows it."""
    path = Path(path)
    label = label or str(path)
    report = ScanReport(path)
    seen: dict[str, tuple[str, int]] = {}
    raw_metadata: bytes | None = None
    try:
        # gzip.GzipFile, not tarfile's own "r|gz": it checks the stream's CRC and length, and a
        # corrupt stream whose garbage tarfile reads as the end of the archive is then named as such.
        with (open(path, "rb") as raw, gzip.GzipFile(fileobj=ProgressReader(raw, progress), mode="rb") as unzipped,
              tarfile.open(fileobj=unzipped, mode="r|", tarinfo=_BoundedTarInfo) as tar):
            for count, member in enumerate(tar, 1):
                # tarfile keeps every header it reads, and so do `seen` and the problems: a few MB
                # of gzip holding a million empty members took 770 MB (and a line each).
                tar.members.clear()  # a stream is never read back
                if count > MAX_MEMBERS:
                    report.problems.append(f"more than {MAX_MEMBERS:,} members: not a log bundle")
                    return report
                name = member.name
                if member.isdir() and not unsafe_reason(name.rstrip("/") + "/"):
                    continue  # directory entries (tar czf adds them) are never extracted
                kind = _member_kind(member)
                reason = unsafe_reason(name) or (kind and f"it is {kind}")
                if reason:
                    report.problems.append(f"unsafe member {name!r} refused: {reason}")
                    continue
                stream = tar.extractfile(member)
                if name == METADATA and raw_metadata is not None:
                    report.problems.append(f"member {name!r} appears twice")
                    continue
                if name in seen:
                    # The seed archived a weekly partition once per day of the range: identical
                    # copies are one member (staged once); a copy with other bytes is refused.
                    if copy_hashing(stream, None) != seen[name]:
                        report.problems.append(f"member {name!r} appears twice with different content")
                    continue
                if name == METADATA:
                    raw_metadata = stream.read(MAX_METADATA_BYTES + 1)
                    continue
                if stage_dir is not None and is_partition_member(name):
                    # A small archive can unpack to gigabytes: its tar header says how many
                    # before a byte is written.
                    ensure_room(Path(stage_dir), member.size, f"{name} unpacks to")
                    target_path = Path(stage_dir) / f"member-{len(report.staged)}.sqlite3"
                    with open(target_path, "wb") as target:
                        seen[name] = copy_hashing(stream, target)
                    report.staged[name] = target_path
                else:
                    seen[name] = copy_hashing(stream, None)
            while unzipped.read(1 << 20):  # to the end of the gzip stream, where its checksum is
                pass
    except FileNotFoundError:
        raise UnusableInput(f"{label}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if no_room(exc):  # writing a staged member, not reading the archive
            raise
        raise UnusableInput(f"{label}: not a readable gzip tar archive (truncated or corrupt?): {exc}") from None
    _check_against_metadata(report, raw_metadata, seen)
    return report


def no_room(exc: BaseException) -> bool:
    """A write refused for want of room: a full disk, a quota or a file size limit (OSError), or
    SQLite's SQLITE_FULL (also behind peewee's own error)."""
    if isinstance(exc, OSError):
        return exc.errno in _NO_ROOM
    return sqlite_code(exc) == sqlite3.SQLITE_FULL


def spare_bytes(disk_total: int) -> int:
    """What a bundle import leaves free on a disk of `disk_total` bytes."""
    return min(MAX_SPARE_BYTES, disk_total // SPARE_SHARE)


def ensure_room(directory: Path, size: int, what: str) -> None:
    """Refuse `size` more bytes on the disk of `directory` when they would eat into its spare.
    `what` starts the message ("x unpacks to"); it never names `directory`, which is the
    server's own path when the caller is remote."""
    usage = shutil.disk_usage(directory)
    spare = spare_bytes(usage.total)
    if size + spare > usage.free:
        raise NoSpace(
            f"{what} {size:,} bytes and the store's disk has {usage.free:,} bytes free (keeping {spare:,} spare):"
            " free some space on that disk, or check where the bundle came from"
        )


def _check_against_metadata(report: ScanReport, raw_metadata: bytes | None, seen: dict[str, tuple[str, int]]) -> None:
    if raw_metadata is None:
        report.problems.append("metadata.json is missing: the members cannot be checked")
        return
    if len(raw_metadata) > MAX_METADATA_BYTES:
        report.problems.append("metadata.json is implausibly large")
        return
    try:
        report.metadata, report.entries = parse_metadata(raw_metadata)
    except BundleError as exc:
        report.problems.append(str(exc))
        return
    for name, entry in report.entries.items():
        if unsafe_reason(name) or name == METADATA:
            report.problems.append(f"metadata.json lists an unsafe path {name!r}")
        elif name not in seen:
            report.problems.append(f"missing member {name}")
        elif seen[name][0] != entry.sha256:
            report.problems.append(f"{name}: sha256 mismatch (archive {seen[name][0]}, metadata {entry.sha256})")
        elif seen[name][1] != entry.bytes:
            report.problems.append(f"{name}: {seen[name][1]} bytes, metadata says {entry.bytes}")
        elif name.startswith("db/") and not is_partition_member(name):
            report.problems.append(f"{name}: not a partition file name")
    for name in sorted(set(seen) - set(report.entries)):
        report.problems.append(f"unlisted member {name}")
