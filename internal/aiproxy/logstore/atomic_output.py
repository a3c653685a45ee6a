"""Output files that appear only when complete (`bundle create`'s archive, `merge`'s target).

The caller writes a temporary file beside the final one (`.<name>.<random>.tmp`, same directory so
the rename stays on one file system); it is fsynced and renamed into place when the block ends
without an error. Ctrl-C, SIGTERM, an error or a full disk removes it; one a kill -9 left behind is never
read (its name is random, and no command reads `.*.tmp`) and never in the way of the next run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


class OutputExists(Exception):
    """The final file exists and the caller may not replace it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} exists")
        self.path = path


@contextlib.contextmanager
def atomic_output(final: Path, *, overwrite: bool) -> Iterator[Path]:
    """The temporary path to write; `final` gets its content when the block succeeds. Without
    `overwrite`, an existing `final` raises OutputExists before anything is written, and one that
    appears meanwhile is not replaced either."""
    # A symlinked target (backups/latest.sqlite3 -> ...) keeps its link: the file it points at is replaced.
    final = Path(os.path.realpath(final))
    if not overwrite and final.exists():
        raise OutputExists(final)
    temp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield temp
        with open(temp, "rb") as written:  # the data on disk before the name points at it
            os.fsync(written.fileno())
        _rename(temp, final, overwrite)
        _fsync_directory(final.parent)  # the rename itself survives a power cut
    finally:
        # With SQLite's files beside it: a connection closed while an error's traceback still holds
        # its statement (one a stop signal interrupted) is closed later, and leaves its -wal and -shm.
        for leftover in ("", "-wal", "-shm", "-journal"):
            temp.with_name(temp.name + leftover).unlink(missing_ok=True)


def _rename(temp: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp, final)
        return
    try:
        os.link(temp, final)  # unlike a rename, fails rather than replace a file created meanwhile
    except FileExistsError:
        raise OutputExists(final) from None
    except OSError:  # a file system without hard links (FAT, some FUSE mounts): the check on entry must do
        os.replace(temp, final)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot open or sync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
