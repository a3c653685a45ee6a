"""`bundle create`: a consistent, self-describing archive of the partitions in a date range.

Every partition file overlapping [since, to] goes in once, whatever its granularity (the seed
added a weekly file once per day). Each is copied with SQLite's online backup API, so a file
the gateway is writing (WAL) is archived as one consistent snapshot, never as a torn copy of
the main file without its WAL. The archive is written under a temporary name in the target
directory and renamed when complete (atomic_output): a crash never leaves a half archive under the
final name, and an existing file there is replaced only when asked to.
"""

from __future__ import annotations

import hashlib
import io
import re
import sqlite3
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import orjson

from aiproxy.logstore.atomic_output import atomic_output
from aiproxy.logstore.bundles.manifest import (
    DB_PREFIX,
    FORMAT,
    METADATA,
    RAW_PREFIX,
    ProgressReader,
    sha256_file,
)
from aiproxy.logstore.bundles.transfer import local_destination
from aiproxy.logstore.damage import converted
from aiproxy.logstore.database import SCHEMA_VERSION, connect_read_only
from aiproxy.logstore.ingest import discover_sources
from aiproxy.logstore.partitions import check_day_order, day_of
from aiproxy.logstore.stoppable import backup_in_steps
from aiproxy.logstore.store import Store

COMPRESSLEVEL = 6  # gzip's and tar czf's default: the benchmark compares like with like
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class CreateResult:
    path: Path
    bundle_id: str
    sha256: str
    files: int
    rows: int
    input_bytes: int  # uncompressed bytes archived
    bytes: int  # archive size
    elapsed_s: float

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["path"] = str(self.path)
        out["mb_per_s"] = round(self.input_bytes / 1e6 / self.elapsed_s, 1) if self.elapsed_s else 0.0
        return out

    def summary(self) -> str:
        d = self.as_dict()
        return (
            f"{d['path']} files={d['files']} rows={d['rows']} bytes={d['bytes']} input_bytes={d['input_bytes']}"
            f" elapsed_s={d['elapsed_s']:.3f} mb_per_s={d['mb_per_s']}"
        )


def snapshot(source: Path, target: Path, busy_timeout_s: float = 5.0) -> int:
    """Copy a (possibly live, WAL) database with the online backup API; returns its request rows.
    The copy uses a rollback journal, so it is one self-contained file."""
    src = connect_read_only(source, busy_timeout_s)  # a read-only store can be archived too
    dst = sqlite3.connect(target)
    try:
        backup_in_steps(src, dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        has_requests = dst.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='requests'").fetchone()
        return dst.execute("SELECT COUNT(*) FROM requests").fetchone()[0] if has_requests else 0
    finally:
        dst.close()
        src.close()


def bundle_name(server_id: str, since: date, to: date, now: datetime, bundle_id: str) -> str:
    """`logs_<server>_<since>-<to>_<created>_<id8>.tgz`: the bundle id's head keeps two bundles
    of the same range created in the same second (two pulls) from claiming one name."""
    server = re.sub(r"[^A-Za-z0-9._-]", "_", server_id)[:40] or "unknown"
    days = f"{since.isoformat().replace('-', '')}-{to.isoformat().replace('-', '')}"  # %Y does not pad year 1
    return f"logs_{server}_{days}_{now:%Y%m%dT%H%M%SZ}_{bundle_id[:8]}.tgz"


def raw_log_files(raw_dir: Path, since: date) -> list[Path]:
    """Request log files that may hold records of the range: modified on or after `since`
    (the seed also dropped files modified after `to`, which still hold the range's first records)."""
    return [p for p in discover_sources(raw_dir) if day_of(int(p.stat().st_mtime)) >= since]


class _Archive:
    """The tar stream plus the metadata entries of what went into it."""

    def __init__(self, tar: tarfile.TarFile, mtime: float, progress: Progress | None) -> None:
        self.tar, self.mtime, self.progress = tar, mtime, progress
        self.entries: list[dict] = []

    def add(self, name: str, path: Path, rows: int | None = None) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = path.stat().st_size, self.mtime, 0o644
        with open(path, "rb") as stream:
            reader = _HashingReader(stream, self.progress)
            self.tar.addfile(info, reader)
        entry = {"path": name, "sha256": reader.hexdigest(), "bytes": info.size}
        if rows is not None:
            entry["rows"] = rows
        self.entries.append(entry)

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
        self.tar.addfile(info, io.BytesIO(data))


class _HashingReader(ProgressReader):
    """A file object that hashes what tarfile reads from it: one pass per member. tarfile reads
    exactly the size taken when the member was added, so a raw log growing meanwhile is fine."""

    def __init__(self, stream, progress: Progress | None) -> None:
        super().__init__(stream, progress)
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def create_bundle(
    store: Store,
    since: date,
    to: date,
    out: str | Path,
    *,
    raw_dir: Path | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> CreateResult:
    """Archive every partition overlapping [since, to] (and, with raw_dir, its request logs).
    OutputExists, before anything is read, when `out` names an existing file and not `overwrite`."""
    check_day_order(since, to, ("--since", "--to"))
    started = time.perf_counter()
    now = datetime.now(UTC)
    partitions = store.existing(since, to)
    raws = raw_log_files(raw_dir, since) if raw_dir is not None else []
    bundle_id = str(uuid.uuid4())
    final = local_destination(bundle_name(store.server_id, since, to, now, bundle_id), out)
    rows = 0
    with atomic_output(final, overwrite=overwrite) as temp, \
            tempfile.TemporaryDirectory(dir=final.parent, prefix=".bundle-snapshots-") as scratch:
        with open(temp, "wb") as target:
            tar = tarfile.open(fileobj=target, mode="w:gz", compresslevel=COMPRESSLEVEL)
            archive = _Archive(tar, now.timestamp(), progress)
            for number, part in enumerate(partitions):
                copy = Path(scratch) / f"{number}.sqlite3"
                with converted(part.path):  # a damaged partition fails the bundle, by name (a backup misses no day)
                    count = snapshot(part.path, copy, store.settings.busy_timeout_ms / 1000)
                rows += count
                archive.add(DB_PREFIX + part.path.relative_to(store.base).as_posix(), copy, count)
                copy.unlink()
            for path in raws:
                archive.add(RAW_PREFIX + path.relative_to(Path(raw_dir).absolute()).as_posix(), path)
            metadata = {
                "format": FORMAT,
                "bundle_id": bundle_id,
                "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "server_id": store.server_id,
                "schema_version": SCHEMA_VERSION,
                "since": since.isoformat(),
                "to": to.isoformat(),
                "granularity": store.settings.partition_granularity,
                "include_raw": raw_dir is not None,
                "rows": rows,
                "files": archive.entries,
            }
            archive.add_bytes(METADATA, orjson.dumps(metadata, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            tar.close()
    digest, size = sha256_file(final)
    return CreateResult(
        final, bundle_id, digest, len(archive.entries), rows,
        sum(e["bytes"] for e in archive.entries), size, time.perf_counter() - started,
    )

