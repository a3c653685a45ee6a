"""The bundle format: a gzip tar holding `db/<partition path>` files, optional `raw/<log file>`
files and a trailing `metadata.json` (the seed's layout and name), plus the checks every reader
applies to member names and to the metadata.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import orjson

METADATA = "metadata.json"
FORMAT = "aiproxy.logbundle.v1"
DB_PREFIX = "db/"
RAW_PREFIX = "raw/"
CHUNK = 1024 * 1024
WIRE_CHUNK = 256 * 1024  # bytes per gRPC message, well under any message size limit
SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # as every sha256 of a bundle or member is written

_PARTITION_MEMBER = re.compile(r"^db/\d{4}/(?:\d{2}|W\d{2}|M\d{2})/ai_proxy_[0-9W]+\.sqlite3$")


class BundleError(Exception):
    """A bundle that cannot be used. `exit_code`: 1 for a bad bundle, 2 for unusable input."""

    exit_code = 1


class StoreError(BundleError):
    """The store could not take a bundle (a write refused, a lock held too long): a failed
    operation, undone, not a bad bundle."""


class NoSpace(StoreError):
    """The store's disk cannot take what a bundle would need (a failed operation, not a bad bundle)."""


class UnusableInput(BundleError):
    """Not a readable gzip tar at all (missing, not gzip, truncated), or a schema we cannot read."""

    exit_code = 2


def unsafe_reason(name: str) -> str | None:
    """Why a member name must never be written to disk (None when it is safe)."""
    if not name or "\\" in name or "\x00" in name:
        return "empty name or backslash/NUL in name"
    path = PurePosixPath(name)
    if path.is_absolute():
        return "absolute path"
    if ".." in path.parts:
        return "'..' in path"
    if not (name == METADATA or name.startswith((DB_PREFIX, RAW_PREFIX))):
        return "outside db/, raw/ and metadata.json"
    return None


def is_partition_member(name: str) -> bool:
    return bool(_PARTITION_MEMBER.match(name))


def schema_number(value: Any) -> int:
    """`schema_version` as an int: ours are ints, the seed wrote "v1"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"v?\d+", value):
        return int(value.lstrip("v"))
    raise BundleError(f"metadata.json: schema_version {value!r} is not a version number")


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    sha256: str
    bytes: int
    rows: int | None = None  # requests in a db/ file


def parse_metadata(raw: bytes) -> tuple[dict[str, Any], dict[str, FileEntry]]:
    """The metadata object and its file list by path; BundleError when it cannot be trusted."""
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"metadata.json is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), list):
        raise BundleError("metadata.json has no 'files' list")
    entries: dict[str, FileEntry] = {}
    for item in meta["files"]:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise BundleError(f"metadata.json: file entry without a path: {item!r}")
        sha, size = item.get("sha256"), item.get("bytes")
        if not isinstance(sha, str) or not SHA256_HEX.fullmatch(sha) or not isinstance(size, int):
            raise BundleError(f"metadata.json: {item['path']} lacks a sha256 or a byte count")
        entry = FileEntry(item["path"], sha, size, item.get("rows"))
        if entries.setdefault(entry.path, entry) != entry:  # the seed listed a weekly file once a day
            raise BundleError(f"metadata.json lists {entry.path} twice, with different sha256, bytes or rows")
    schema_number(meta.get("schema_version", 0))
    for key in ("server_id", "bundle_id"):
        _check_identifier(key, meta.get(key, ""))
    return meta, entries


def _check_identifier(key: str, value: Any) -> None:
    """`server_id` becomes a `servers` row of the destination and both end the import's one-line
    summary: a JSON object or a control character in them is a forged bundle, not a name."""
    if not isinstance(value, str) or any(c < " " or c == "\x7f" for c in value):
        raise BundleError(f"metadata.json: {key} {str(value)[:80]!r} is not a single-line string")


class ProgressReader:
    """A binary stream that reports the bytes read through it: progress over an archive's bytes."""

    def __init__(self, stream: BinaryIO, progress=None) -> None:
        self._stream, self._progress = stream, progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if self._progress is not None:
            self._progress(len(data))
        return data


def copy_hashing(source: BinaryIO, target: BinaryIO | None, progress=None) -> tuple[str, int]:
    """Copy a stream (or just read it when target is None); returns (sha256 hex, bytes)."""
    digest, total = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        total += len(chunk)
        if target is not None:
            target.write(chunk)
        if progress is not None:
            progress(len(chunk))
    return digest.hexdigest(), total


def sha256_file(path: Path) -> tuple[str, int]:
    with open(path, "rb") as stream:
        return copy_hashing(stream, None)
