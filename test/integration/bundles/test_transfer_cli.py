"""`logdb bundle transfer SRC DEST` to a local path, as scripts read it: the seed's one line
`bytes=<n> sha256=<hex> verify=ok|fail` for a .tgz (seed-spec §7.8), exit 1 when it fails."""

import json

from aiproxy.entrypoints.logdb import main
from aiproxy.testing.bundles import repack

FIRST_DB = "db/2025/09/ai_proxy_20250905.sqlite3"


def test_a_bundle_copy_reports_bytes_sha256_and_verify_on_one_line(tmp_path, bundle, capsys):
    (tmp_path / "inbox").mkdir()
    assert main(["bundle", "transfer", str(bundle), f"{tmp_path}/inbox/"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    size = bundle.stat().st_size
    assert line.startswith(f"bytes={size} sha256=") and " verify=ok " in line
    assert line.endswith(f"path={tmp_path / 'inbox' / bundle.name}")


def test_a_bad_bundle_copies_but_says_verify_fail_and_exits_1(tmp_path, bundle, capsys):
    bad = repack(bundle, tmp_path / "bad.tgz", lambda name, data: data[:-1] + b"x" if name == FIRST_DB else data)
    assert main(["bundle", "transfer", str(bad), str(tmp_path / "copy.tgz")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{FIRST_DB}: sha256 mismatch" in lines[0] and " verify=fail " in lines[-1]


def test_json_is_one_document_with_the_verdict(tmp_path, bundle, capsys):
    assert main(["bundle", "transfer", str(bundle), str(tmp_path / "copy.tgz"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["verify"], out["problems"], out["bytes"]) == ("ok", [], bundle.stat().st_size)


def test_another_file_gets_the_seed_line_without_verify(tmp_path, capsys):
    source = tmp_path / "notes.txt"
    source.write_text("hello\n")
    assert main(["bundle", "transfer", str(source), str(tmp_path / "copy.txt")]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("bytes=6 sha256=") and "verify=" not in line


def test_a_copied_file_that_is_no_bundle_says_verify_fail_and_exits_2(tmp_path, capsys):
    source = tmp_path / "junk.tgz"
    source.write_bytes(b"not gzip at all\n")
    assert main(["bundle", "transfer", str(source), str(tmp_path / "copy.tgz")]) == 2
    captured = capsys.readouterr()
    assert " verify=fail " in captured.out and "not a readable gzip tar" in captured.err
