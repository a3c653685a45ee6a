"""Local `bundle transfer`: directories, resume through .part, never over a different file."""

import os

import pytest

from aiproxy.logstore.bundles.manifest import UnusableInput
from aiproxy.logstore.bundles.transfer import TransferError, transfer_local

DATA = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "src" / "logs.tgz"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


def test_into_a_directory_keeps_the_name(tmp_path, source):
    (tmp_path / "dest").mkdir()
    result = transfer_local(source, tmp_path / "dest")
    assert result.path == tmp_path / "dest" / "logs.tgz" and result.path.read_bytes() == DATA
    assert not (tmp_path / "dest" / "logs.tgz.part").exists()


def test_a_trailing_slash_creates_the_directory(tmp_path, source):
    result = transfer_local(source, f"{tmp_path}/new/")
    assert result.path == tmp_path / "new" / "logs.tgz"


@pytest.mark.parametrize("dest", ["{tmp}/typo/new/", "{tmp}/typo/copy.tgz"])
def test_a_missing_parent_directory_is_reported_not_created(tmp_path, source, dest):
    with pytest.raises(UnusableInput, match="no such directory"):
        transfer_local(source, dest.format(tmp=tmp_path))
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("dest", ["backup-host:bundles/", "ops@10.0.0.5:/srv/logs/x.tgz", "srv:"])
def test_an_scp_style_target_is_refused_not_created_as_a_local_name(tmp_path, source, monkeypatch, dest):
    """The seed's docs showed `bundle transfer x.tgz host:path`, which never worked; it must not
    quietly copy into ./host:path and exit 0 either."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnusableInput, match="looks like an scp target") as refused:
        transfer_local(source, dest)
    assert "grpc://" in str(refused.value) and sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    (tmp_path / "odd:name").mkdir()  # a local directory with a colon, existing or spelled ./ , is fine
    assert transfer_local(source, "odd:name").path == tmp_path / "odd:name" / "logs.tgz"
    assert transfer_local(source, "./new:dir/").path == tmp_path / "new:dir" / "logs.tgz"


def test_an_interrupted_copy_resumes_from_the_part_file(tmp_path, source):
    dest = tmp_path / "copy.tgz"
    (tmp_path / "copy.tgz.part").write_bytes(DATA[: len(DATA) // 2])  # what a killed copy leaves
    result = transfer_local(source, dest)
    assert result.resumed_from == len(DATA) // 2 and dest.read_bytes() == DATA


def test_a_part_file_that_is_not_a_prefix_starts_over(tmp_path, source):
    (tmp_path / "copy.tgz.part").write_bytes(b"garbage" * 1000)
    result = transfer_local(source, tmp_path / "copy.tgz")
    assert result.resumed_from == 0 and (tmp_path / "copy.tgz").read_bytes() == DATA


def test_the_same_file_is_left_alone_a_different_one_is_refused(tmp_path, source):
    dest = tmp_path / "copy.tgz"
    transfer_local(source, dest)
    assert transfer_local(source, dest).already_present
    dest.write_bytes(b"other")
    with pytest.raises(TransferError, match="refusing to overwrite"):
        transfer_local(source, dest)
    assert dest.read_bytes() == b"other"


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_a_part_file_planted_as_a_link_is_never_written_through(tmp_path, source, link):
    """In a directory others can write (/tmp, a shared backup volume) a `.part` planted as a link
    to another file made the copy truncate and overwrite that file."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "dest").mkdir()
    link(victim, tmp_path / "dest" / "logs.tgz.part")
    with pytest.raises(TransferError, match="refusing to write"):
        transfer_local(source, tmp_path / "dest")
    assert victim.read_bytes() == b"precious" and not (tmp_path / "dest" / "logs.tgz").exists()
