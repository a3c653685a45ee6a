"""`bundle transfer SRC DEST` to a local file or directory: resumable, checksum verified, and
never overwriting a different file.

Bytes go to `<dest>.part`. After an interruption the next run checks that the .part is a prefix
of the source (else starts over) and appends the rest. The complete .part must hash like the
source; it then appears under the final name atomically (a hard link, which fails rather than
replace a file that appeared meanwhile). A DEST holding the same bytes is left alone.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiproxy.logstore.bundles.manifest import CHUNK, BundleError, UnusableInput, copy_hashing, sha256_file


class TransferError(BundleError):
    """The copy cannot be completed safely (different file at DEST, checksum mismatch)."""


@dataclass(frozen=True, slots=True)
class TransferResult:
    path: Path
    bytes: int
    sha256: str
    resumed_from: int = 0
    already_present: bool = False

    def as_dict(self) -> dict:
        return {"path": str(self.path), "bytes": self.bytes, "sha256": self.sha256,
                "resumed_from": self.resumed_from, "already_present": self.already_present}


# HOST:PATH or USER@HOST:PATH, as scp and rsync spell a remote file: no "/" before the first colon.
_SCP_TARGET = re.compile(r"[^/:]+:")


def local_destination(name: str, dest: str | Path) -> Path:
    """DEST itself, or DEST/<name> when DEST is a directory or ends in / (that last directory is
    created, as rsync does). Its parent must exist: a typo in a path is reported, not created.
    `name` must be a plain file name: on pull the server chooses it, never a directory."""
    path, is_dir = _checked_destination(dest)
    if not is_dir:
        return path
    if not name or name in (".", "..") or any(c in name for c in ("/", "\\", "\x00")):
        raise TransferError(f"refusing file name {name!r}: not a plain file name")
    path.mkdir(exist_ok=True)
    return path / name


def named_file(dest: str | Path) -> Path | None:
    """The file DEST names, checked as local_destination checks it; None when DEST is a directory,
    where the file's name is still to come."""
    path, is_dir = _checked_destination(dest)
    return None if is_dir else path


def _checked_destination(dest: str | Path) -> tuple[Path, bool]:
    """(DEST as an absolute path, whether it names a directory); UnusableInput for a path that cannot be meant."""
    path = Path(dest).absolute()
    if _SCP_TARGET.match(str(dest)) and not path.exists():
        raise UnusableInput(
            f"{dest} looks like an scp target (HOST:PATH), which bundle transfer does not reach: give a local "
            "path, or grpc://HOST:PORT to send it to that gateway's LogService (docs/bundles.md); copy it "
            f"with scp or rsync yourself, or write ./{dest} for a local name with a colon"
        )
    if not path.parent.is_dir():
        raise UnusableInput(f"{path.parent}: no such directory (create it first)")
    return path, path.is_dir() or str(dest).endswith(("/", os.sep))


def different_file(final: Path) -> TransferError:
    return TransferError(f"{final} exists with different content: refusing to overwrite it")


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def open_part(part: Path, offset: int = 0) -> BinaryIO:
    """`part` for writing from `offset` on (what follows is cut), never through a link: in a
    directory others can write (/tmp, a shared backup volume) a .part planted as a symbolic or hard
    link made the copy overwrite the file it pointed to."""
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise TransferError(f"{part} is a symbolic link: refusing to write through it (remove it)") from None
    target = os.fdopen(fd, "wb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        target.close()
        raise TransferError(f"{part} is not a plain file of its own (a hard link?): refusing to write to it (remove it)")
    target.seek(offset)
    target.truncate()
    return target


def publish(part: Path, final: Path, sha256: str, size: int) -> bool:
    """Move a verified .part to `final`; False when `final` already holds these bytes.
    TransferError when it holds different ones (the .part is kept)."""
    try:
        os.link(part, final)
    except FileExistsError:
        if sha256_file(final) != (sha256, size):
            raise different_file(final) from None
        part.unlink()
        return False
    part.unlink()
    return True


def _resume_offset(part: Path, source: Path) -> int:
    """How many bytes of `part` are a prefix of `source` (0 when it is not a prefix)."""
    if not part.is_file() or part.stat().st_size > source.stat().st_size:
        return 0
    with open(part, "rb") as held, open(source, "rb") as original:
        while chunk := held.read(CHUNK):
            if original.read(len(chunk)) != chunk:
                return 0
    return part.stat().st_size


def transfer_local(source: Path, dest: str | Path, progress=None) -> TransferResult:
    source = Path(source)
    if not source.is_file():
        raise UnusableInput(f"{source}: no such file")
    sha, size = sha256_file(source)
    final = local_destination(source.name, dest)
    if final.exists():
        if sha256_file(final) == (sha, size):
            return TransferResult(final, size, sha, already_present=True)
        raise different_file(final)
    part = part_path(final)
    offset = _resume_offset(part, source)
    with open(source, "rb") as original, open_part(part, offset) as target:
        original.seek(offset)
        copy_hashing(original, target, progress)
        target.flush()
        os.fsync(target.fileno())
    if sha256_file(part) != (sha, size):
        part.unlink()
        raise TransferError(f"{part}: checksum mismatch after copying (source changed?); run again")
    already = not publish(part, final, sha, size)
    return TransferResult(final, size, sha, resumed_from=offset, already_present=already)
