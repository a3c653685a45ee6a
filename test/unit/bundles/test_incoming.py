"""Server-side partial uploads: offsets, rewinds, checksums, one upload of a bundle at a time."""

import hashlib
import os
import time
from types import SimpleNamespace

import pytest

from aiproxy.logstore.bundles import verify
from aiproxy.logstore.bundles.incoming import (
    UPLOAD_EXPIRY_SECONDS,
    ChecksumMismatch,
    UploadBusy,
    UploadError,
    Uploads,
)
from aiproxy.logstore.bundles.manifest import NoSpace, UnusableInput

DATA = bytes(range(256)) * 100
SHA = hashlib.sha256(DATA).hexdigest()


def test_upload_in_two_parts_then_finish(tmp_path):
    uploads = Uploads(tmp_path / "incoming")
    assert uploads.offset(SHA, len(DATA)) == 0
    with uploads.open_at(SHA, len(DATA), 0) as stream:
        stream.write(DATA[:1000])
    assert uploads.offset(SHA, len(DATA)) == 1000
    with uploads.open_at(SHA, len(DATA), 1000) as stream:
        stream.write(DATA[1000:])
    assert uploads.finish(SHA, len(DATA)).read_bytes() == DATA


def test_rewind_is_allowed_skipping_ahead_is_not(tmp_path):
    uploads = Uploads(tmp_path)
    with uploads.open_at(SHA, len(DATA), 0) as stream:
        stream.write(DATA[:500])
    with pytest.raises(UploadError, match="resume from 500"):
        uploads.open_at(SHA, len(DATA), 600)
    with uploads.open_at(SHA, len(DATA), 100) as stream:
        stream.write(DATA[100:200])
    assert uploads.offset(SHA, len(DATA)) == 200


def test_wrong_bytes_are_dropped_on_finish(tmp_path):
    uploads = Uploads(tmp_path)
    with uploads.open_at(SHA, len(DATA), 0) as stream:
        stream.write(b"x" * len(DATA))
    with pytest.raises(ChecksumMismatch):
        uploads.finish(SHA, len(DATA))
    assert uploads.offset(SHA, len(DATA)) == 0


def test_a_concurrent_upload_of_the_same_bundle_is_refused(tmp_path):
    uploads = Uploads(tmp_path)
    with uploads.open_at(SHA, len(DATA), 0), pytest.raises(UploadBusy):
        uploads.open_at(SHA, len(DATA), 0)


@pytest.mark.parametrize("sha", ["../../etc/passwd", SHA + "\n", SHA.upper(), ""])
def test_a_malformed_checksum_never_becomes_a_path(tmp_path, sha):
    with pytest.raises(UnusableInput, match="not a lower-case hex SHA-256"):
        Uploads(tmp_path).offset(sha, 10)


def test_a_negative_size_is_refused(tmp_path):
    with pytest.raises(UnusableInput, match="negative"):
        Uploads(tmp_path).offset(SHA, -1)


def test_an_upload_that_cannot_fit_on_the_disk_is_refused_before_a_byte_is_written(tmp_path, monkeypatch):
    """Only what is still to come counts: bytes held are on the disk already."""
    total = 100 * 1024 * 1024  # a 100 MiB volume: 5 MiB spare
    monkeypatch.setattr(verify.shutil, "disk_usage", lambda path: SimpleNamespace(free=len(DATA) // 2 + total // 20,
                                                                                  total=total))
    uploads = Uploads(tmp_path / "incoming")
    with pytest.raises(NoSpace, match="the store's disk has"):
        uploads.offset(SHA, len(DATA))
    with pytest.raises(NoSpace):
        uploads.open_at(SHA, len(DATA), 0)
    assert not list((tmp_path / "incoming").iterdir())
    (tmp_path / "incoming" / f"upload-{SHA}.part").write_bytes(DATA[: len(DATA) // 2])
    assert uploads.offset(SHA, len(DATA)) == len(DATA) // 2  # the rest fits


def test_an_upload_nobody_resumed_for_a_day_is_deleted_when_the_next_starts(tmp_path):
    """Was: abandoned partial uploads stayed in incoming/ for good (2,700 of them left 517 MB)."""
    uploads = Uploads(tmp_path)
    stale, fresh = uploads.part("a" * 64), uploads.part("b" * 64)
    for part in (stale, fresh):
        part.write_bytes(DATA[:100])
    long_ago = time.time() - UPLOAD_EXPIRY_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    assert uploads.offset(SHA, len(DATA)) == 0
    assert not stale.exists() and fresh.read_bytes() == DATA[:100]
    assert uploads.offset("b" * 64, len(DATA)) == 100  # a fresh one still resumes
