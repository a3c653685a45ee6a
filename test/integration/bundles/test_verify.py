"""`bundle verify` on good, tampered, incomplete, unsafe and unreadable bundles (exit 0/1/2)."""

import gzip
import tarfile
import tracemalloc
import zlib

import pytest

from aiproxy.entrypoints.logdb import main
from aiproxy.logstore.bundles import verify
from aiproxy.logstore.bundles.manifest import UnusableInput
from aiproxy.logstore.bundles.verify import scan_bundle
from aiproxy.testing.bundles import member, read_members, repack, write_members

FIRST_DB = "db/2025/09/ai_proxy_20250905.sqlite3"


def test_a_fresh_bundle_verifies(bundle, capsys):
    assert main(["bundle", "verify", str(bundle)]) == 0
    assert capsys.readouterr().out.strip() == "ok"


def test_a_tampered_member_fails(tmp_path, bundle, capsys):
    def flip(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name == FIRST_DB else data

    bad = repack(bundle, tmp_path / "bad.tgz", flip)
    assert main(["bundle", "verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{FIRST_DB}: sha256 mismatch" in out and out.strip().endswith("fail")


def test_a_wrong_byte_count_fails(tmp_path, bundle):
    def grow(meta):
        meta["files"][0]["bytes"] += 1
        return meta

    report = scan_bundle(repack(bundle, tmp_path / "bad.tgz", metadata=grow))
    assert any("bytes, metadata says" in p for p in report.problems)


def test_missing_and_unlisted_members_are_reported(tmp_path, bundle):
    bad = repack(bundle, tmp_path / "bad.tgz", lambda n, d: None if n == FIRST_DB else d)
    members = read_members(bad) + [member("raw/extra.jsonl", b"{}\n")]
    report = scan_bundle(write_members(tmp_path / "bad2.tgz", members))
    assert f"missing member {FIRST_DB}" in report.problems and "unlisted member raw/extra.jsonl" in report.problems


def test_a_missing_metadata_json_is_a_clear_failure_not_a_crash(tmp_path, bundle, capsys):
    members = [m for m in read_members(bundle) if m[0].name != "metadata.json"]
    bad = write_members(tmp_path / "bad.tgz", members)
    assert main(["bundle", "verify", str(bad)]) == 1
    assert "metadata.json is missing" in capsys.readouterr().out


def test_a_broken_metadata_json_fails(tmp_path, bundle):
    members = [(i, b"{oops" if i.name == "metadata.json" else d) for i, d in read_members(bundle)]
    assert "not valid JSON" in scan_bundle(write_members(tmp_path / "bad.tgz", members)).problems[0]


@pytest.mark.parametrize("name", ["../x", "/tmp/evil", "db/../../x"])
def test_unsafe_member_names_are_refused_and_never_written(tmp_path, bundle, name, capsys):
    bad = write_members(tmp_path / "bad.tgz", read_members(bundle) + [member(name, b"pwned")])
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert main(["bundle", "verify", str(bad)]) == 1
    assert f"unsafe member {name!r} refused" in capsys.readouterr().out
    assert main(["bundle", "import", str(bad), "--dest", str(workdir / "db")]) == 1
    assert not (tmp_path / "x").exists() and not list(workdir.rglob("x"))


def test_links_and_devices_are_refused(tmp_path, bundle):
    link = tarfile.TarInfo("db/2025/09/ai_proxy_20250901.sqlite3")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("raw/dev")
    device.type = tarfile.CHRTYPE
    report = scan_bundle(write_members(tmp_path / "bad.tgz", read_members(bundle) + [(link, None), (device, None)]))
    assert any("is a link to '/etc/passwd'" in p for p in report.problems)
    assert any("device" in p for p in report.problems)


def test_a_truncated_archive_is_unusable_input(tmp_path, bundle, capsys):
    data = bundle.read_bytes()
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnusableInput):
        scan_bundle(cut)
    assert main(["bundle", "verify", str(cut)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_a_corrupt_byte_anywhere_in_the_compressed_stream_is_unusable_input(tmp_path, bundle, capsys):
    # tarfile's own "r|gz" checks no gzip CRC and reads garbage as the end of the archive: a
    # bundle damaged in transit was "metadata.json is missing" (exit 1), or even verified.
    data = bundle.read_bytes()
    assert data[3] == 0x08  # the gzip header holds a file name (FNAME), which no checksum covers
    deflated = data.index(b"\0", 10) + 1
    damaged = tmp_path / "damaged.tgz"
    content = gzip.decompress(data)
    for offset in range(deflated, len(data), max(1, len(data) // 40)):
        flipped = data[:offset] + bytes([data[offset] ^ 0x55]) + data[offset + 1:]
        if _unchanged(flipped, content):
            continue  # bits deflate never reads (e.g. lengths of unused Huffman codes): nothing to detect
        damaged.write_bytes(flipped)
        with pytest.raises(UnusableInput, match="corrupt"):
            scan_bundle(damaged)
    assert main(["bundle", "verify", str(damaged)]) == 2
    assert "not a readable gzip tar archive" in capsys.readouterr().err


def _unchanged(compressed: bytes, content: bytes) -> bool:
    try:
        return gzip.decompress(compressed) == content
    except (OSError, EOFError, zlib.error):
        return False


@pytest.mark.parametrize("cut", [1, 8, 20, 40])
def test_an_archive_cut_in_its_last_bytes_is_unusable_input(tmp_path, bundle, capsys, cut):
    """tarfile stops reading at the end-of-archive blocks and never checks gzip's trailer, so a
    file cut by up to ~40 bytes (an interrupted copy) verified `ok`, though `gzip -t` refuses it and
    its sha256 is not the one `bundle create` printed."""
    data = bundle.read_bytes()
    short = tmp_path / "short.tgz"
    short.write_bytes(data[:-cut])
    with pytest.raises(UnusableInput, match="truncated or corrupt"):
        scan_bundle(short)
    assert main(["bundle", "verify", str(short)]) == 2
    assert main(["bundle", "import", str(short), "--dest", str(tmp_path / "db")]) == 2
    capsys.readouterr()


def test_a_damaged_gzip_trailer_is_unusable_input(tmp_path, bundle):
    data = bytearray(bundle.read_bytes())
    data[-5] ^= 0xFF  # the CRC-32 of the uncompressed data
    damaged = tmp_path / "crc.tgz"
    damaged.write_bytes(bytes(data))
    with pytest.raises(UnusableInput, match="truncated or corrupt"):
        scan_bundle(damaged)


def test_a_file_that_is_not_gzip_or_not_there_is_unusable_input(tmp_path, capsys):
    text = tmp_path / "notes.tgz"
    text.write_text("hello")
    assert main(["bundle", "verify", str(text)]) == 2
    assert main(["bundle", "verify", str(tmp_path / "nope.tgz")]) == 2
    plain_gzip = tmp_path / "plain.tgz"
    plain_gzip.write_bytes(gzip.compress(b"not a tar archive" * 100))
    assert main(["bundle", "verify", str(plain_gzip)]) == 2


WEEKLY_DB = "db/2025/W36/ai_proxy_2025W36.sqlite3"


def test_a_seed_weekly_bundle_with_identical_repeated_members_verifies(seed_weekly_bundle, tmp_path, capsys):
    assert [i.name for i, _ in read_members(seed_weekly_bundle)].count(WEEKLY_DB) == 7
    assert main(["bundle", "verify", str(seed_weekly_bundle)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    (tmp_path / "stage").mkdir()
    report = scan_bundle(seed_weekly_bundle, tmp_path / "stage")
    assert list(report.entries) == [WEEKLY_DB] and list(report.staged) == [WEEKLY_DB]
    assert len(list((tmp_path / "stage").iterdir())) == 1  # staged once


def test_a_repeated_member_name_with_other_content_is_refused(seed_weekly_bundle, tmp_path, capsys):
    members = read_members(seed_weekly_bundle)
    last = max(i for i, (info, _) in enumerate(members) if info.name == WEEKLY_DB)
    info, data = members[last]
    members[last] = (tarfile.TarInfo(info.name), data[:-1] + bytes([data[-1] ^ 1]))
    bad = write_members(tmp_path / "bad.tgz", members)
    assert main(["bundle", "verify", str(bad)]) == 1
    assert f"member {WEEKLY_DB!r} appears twice with different content" in capsys.readouterr().out


def _declaring(path, typ, size):
    """A gzip tar whose first header is of type `typ` and declares `size` bytes (zeros) after it."""
    head = tarfile.TarInfo("././@LongLink")
    head.type, head.size = typ, size
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(head.tobuf(format=tarfile.USTAR_FORMAT))
        for _ in range(size // (1 << 20)):
            out.write(bytes(1 << 20))
        out.write(bytes(1024))
    return path


@pytest.mark.parametrize("typ", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_a_huge_long_name_or_pax_header_is_refused_before_it_is_read(tmp_path, typ, capsys):
    # tarfile reads such a header into memory whole: a 4.6 MB bundle declaring a 1 GiB long name
    # took 3.2 GB of memory to verify (8 GiB, what a plain tar header can declare, would not fit).
    bomb = _declaring(tmp_path / "bomb.tgz", typ, 64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(UnusableInput, match="extended header of 67,108,864 bytes"):
            scan_bundle(bomb)
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()
    assert main(["bundle", "verify", str(bomb)]) == 2
    assert "extended header" in capsys.readouterr().err


def test_a_sparse_member_is_refused(tmp_path, capsys):
    # Its sparse map is read block by block into memory with no bound; bundles never hold one.
    assert main(["bundle", "verify", str(_declaring(tmp_path / "sparse.tgz", tarfile.GNUTYPE_SPARSE, 0))]) == 2
    assert "a sparse member" in capsys.readouterr().err


def test_a_bundle_of_countless_members_is_refused_in_bounded_memory(tmp_path, bundle, monkeypatch, capsys):
    # tarfile keeps every header, and verify a name, hash and problem line per member: 6 MB of gzip
    # holding a million empty members took 770 MB and a minute, and printed a million lines.
    monkeypatch.setattr(verify, "MAX_MEMBERS", 50)
    many = write_members(tmp_path / "many.tgz", read_members(bundle) + [member(f"raw/{i}", b"") for i in range(60)])
    assert main(["bundle", "verify", str(many)]) == 1
    assert capsys.readouterr().out.splitlines() == ["more than 50 members: not a log bundle", "fail"]
    assert main(["bundle", "import", str(many), "--dest", str(tmp_path / "db")]) == 1
    assert "more than 50 members" in capsys.readouterr().err and not list((tmp_path / "db").rglob("ai_proxy_*"))
