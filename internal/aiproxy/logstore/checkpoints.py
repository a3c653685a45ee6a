"""Per-file resume points in the control DB's `ingest_sources` (seed-compatible columns).

A checkpoint is the byte offset after the last record handled, plus the SHA-256 of the file's
head (its first min(offset, 64 KiB) bytes). Hashing the head instead of the whole prefix (the
seed's way) keeps a check O(1) in file size, which live ingestion needs every second; it
still tells a rotated or rewritten file from an appended one. A file now shorter than the
offset was truncated. Either way reading starts over at 0; dedup makes that safe.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from peewee import SqliteDatabase

HEAD_BYTES = 64 * 1024


@dataclass(slots=True)
class Checkpoint:
    offset: int = 0
    line: int = 0
    corrupt: int = 0


def _head_hash(path: Path, length: int) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read(length)).hexdigest()


def resume_point(db: SqliteDatabase, path: Path) -> Checkpoint:
    """Where to continue reading `path`: the stored checkpoint, or 0 when the file changed."""
    row = db.execute_sql(
        "SELECT bytes_ingested, sha256, hashed_bytes, lines_ingested, records_corrupt"
        " FROM ingest_sources WHERE source_path = ?",
        (str(path),),
    ).fetchone()
    if row is None or not row[0]:
        return Checkpoint()
    offset, digest, hashed, lines, corrupt = row
    hashed = hashed if hashed is not None else offset  # a seed row hashed the whole prefix
    try:
        if os.path.getsize(path) < offset or _head_hash(path, hashed) != digest:
            return Checkpoint()
    except OSError:
        return Checkpoint()
    return Checkpoint(offset, lines or 0, corrupt or 0)


def save(db: SqliteDatabase, path: Path, point: Checkpoint) -> None:
    hashed = min(point.offset, HEAD_BYTES)
    try:
        mtime = int(os.path.getmtime(path))
    except OSError:
        mtime = None
    db.execute_sql(
        "INSERT INTO ingest_sources (source_path, sha256, bytes_ingested, mtime, last_scan_ts, hashed_bytes,"
        " lines_ingested, records_corrupt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(source_path) DO UPDATE SET sha256=excluded.sha256, bytes_ingested=excluded.bytes_ingested,"
        " mtime=excluded.mtime, last_scan_ts=excluded.last_scan_ts, hashed_bytes=excluded.hashed_bytes,"
        " lines_ingested=excluded.lines_ingested, records_corrupt=excluded.records_corrupt",
        (str(path), _head_hash(path, hashed), point.offset, mtime, int(time.time()), hashed, point.line, point.corrupt),
    )
