"""The receiving side of resumable uploads (LogService.ImportBundle): partial bundles live in
`<logdb dir>/incoming/upload-<sha256>.part` until all their bytes are in and hash right, or until
nobody has resumed them for UPLOAD_EXPIRY_SECONDS.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from pathlib import Path
from typing import BinaryIO

from aiproxy.logstore.bundles.manifest import SHA256_HEX, BundleError, UnusableInput, sha256_file
from aiproxy.logstore.bundles.verify import ensure_room

# A partial upload untouched this long is deleted when the next upload starts: resumable after a
# dropped connection or a restart, not kept for good (2,700 abandoned uploads had left 517 MB).
UPLOAD_EXPIRY_SECONDS = 86400


class UploadError(BundleError):
    """An upload that cannot go on from here: an offset past the bytes held, more bytes than announced."""


class UploadBusy(UploadError):
    """The same bundle is being uploaded by another call right now."""


class ChecksumMismatch(BundleError):
    """All bytes arrived but they do not hash to the announced sha256."""


class Uploads:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def part(self, sha256: str) -> Path:
        if not SHA256_HEX.fullmatch(sha256 or ""):  # it becomes a file name: no trailing newline either
            raise UnusableInput(f"bundle_sha256 {sha256!r} is not a lower-case hex SHA-256")
        return self.directory / f"upload-{sha256}.part"

    def offset(self, sha256: str, total_bytes: int) -> int:
        """Bytes already held; a partial file longer than the bundle is dropped. NoSpace when the
        rest of the upload would not fit on the store's disk (with the spare an import keeps)."""
        part = self.part(sha256)
        if total_bytes < 0:
            raise UnusableInput(f"total_bytes {total_bytes} is negative")
        self._expire()
        held = part.stat().st_size if part.is_file() else 0
        if held > total_bytes:
            part.unlink(missing_ok=True)  # a concurrent call may have dropped it already
            held = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        ensure_room(self.directory, total_bytes - held, f"an upload of {total_bytes:,} bytes needs")
        return held

    def _expire(self) -> None:
        """Delete the partial uploads nobody wrote to for UPLOAD_EXPIRY_SECONDS (one being written is
        fresh; one another process deletes first, or that cannot be deleted, is left alone)."""
        cutoff = time.time() - UPLOAD_EXPIRY_SECONDS
        for part in self.directory.glob("upload-*.part"):
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def open_at(self, sha256: str, total_bytes: int, offset: int) -> BinaryIO:
        """The partial file, locked against a concurrent upload of the same bundle (in any
        worker process) and positioned at `offset`, which may rewind but never skip ahead."""
        held = self.offset(sha256, total_bytes)
        if not 0 <= offset <= held:
            raise UploadError(f"upload offset {offset} is past the {held} bytes held; resume from {held}")
        stream = open(self.part(sha256), "ab+", buffering=0)  # every chunk reaches the file at once
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.close()
            raise UploadBusy(f"another upload of bundle {sha256} is in progress") from None
        stream.truncate(offset)
        return stream

    def finish(self, sha256: str, total_bytes: int) -> Path:
        """Check the complete upload; returns its file, to import and then remove. Call it
        holding the stream open_at returned: its lock keeps other uploads of the bundle out."""
        part = self.part(sha256)
        digest, size = sha256_file(part)
        if (digest, size) != (sha256, total_bytes):
            part.unlink()
            raise ChecksumMismatch(f"upload is {size} bytes with sha256 {digest}, expected {total_bytes} and {sha256}")
        return part
