import pytest

from aiproxy.logstore.atomic_output import OutputExists, atomic_output


def test_the_output_appears_only_when_the_block_succeeds(tmp_path):
    final = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(final, overwrite=False) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(final, overwrite=False) as temp:
        temp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [final]


def test_an_existing_output_is_refused_unless_overwrite(tmp_path):
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with pytest.raises(OutputExists), atomic_output(final, overwrite=False):
        pass
    with atomic_output(final, overwrite=True) as temp:
        temp.write_bytes(b"new")
    assert final.read_bytes() == b"new"


def test_a_symlinked_output_keeps_its_link_and_replaces_what_it_points_at(tmp_path):
    (tmp_path / "archive").mkdir()
    target = tmp_path / "archive" / "2026-11.sqlite3"
    target.write_bytes(b"old")
    link = tmp_path / "latest.sqlite3"
    link.symlink_to(target)
    with atomic_output(link, overwrite=True) as temp:
        temp.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
