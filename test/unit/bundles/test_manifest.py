"""Member-name safety, metadata parsing and schema versions of the bundle format."""

import orjson
import pytest

from aiproxy.logstore.bundles.manifest import (
    BundleError,
    is_partition_member,
    parse_metadata,
    schema_number,
    unsafe_reason,
)


@pytest.mark.parametrize("name", ["../x", "db/../../etc/passwd", "/etc/passwd", "db\\..\\x", "", "other/file", "db/a\x00b"])
def test_unsafe_names_are_refused(name):
    assert unsafe_reason(name)


@pytest.mark.parametrize("name", ["metadata.json", "db/2025/09/ai_proxy_20250905.sqlite3", "raw/requests/a.jsonl"])
def test_bundle_names_are_safe(name):
    assert unsafe_reason(name) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("db/2025/09/ai_proxy_20250905.sqlite3", True),
        ("db/2025/W36/ai_proxy_2025W36.sqlite3", True),
        ("db/2025/M09/ai_proxy_202509.sqlite3", True),
        ("db/control.sqlite3", False),
        ("db/2025/09/evil.sqlite3", False),
    ],
)
def test_partition_member_names(name, expected):
    assert is_partition_member(name) is expected


def test_schema_version_accepts_ours_and_the_seeds():
    assert schema_number(1) == 1 and schema_number("v1") == 1
    with pytest.raises(BundleError):
        schema_number("latest")


ENTRY = {"path": "db/2025/09/ai_proxy_20250905.sqlite3", "sha256": "0" * 64, "bytes": 10, "rows": 2}


def _meta(**changes):
    return orjson.dumps({"schema_version": 1, "files": [ENTRY], **changes})


def test_metadata_parses_into_entries():
    meta, entries = parse_metadata(_meta())
    assert entries["db/2025/09/ai_proxy_20250905.sqlite3"].rows == 2 and meta["schema_version"] == 1


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'{"files": 3}', orjson.dumps({"files": [{"path": "x"}]}),
     orjson.dumps({"files": [{"path": "x", "sha256": "0" * 64, "bytes": 1}, {"path": "x", "sha256": "1" * 64,
                                                                               "bytes": 1}]})],
)
def test_broken_metadata_is_a_bundle_error(raw):
    with pytest.raises(BundleError):
        parse_metadata(raw)



def test_identical_repeated_entries_are_one_entry():
    """The seed listed a weekly partition once per day of the range: the same path, sha256 and size."""
    _, entries = parse_metadata(_meta(files=[ENTRY] * 7))
    assert list(entries) == [ENTRY["path"]] and entries[ENTRY["path"]].rows == 2


@pytest.mark.parametrize("change", [{"sha256": "1" * 64}, {"bytes": 11}, {"rows": 3}])
def test_repeated_entries_that_differ_are_refused(change):
    with pytest.raises(BundleError, match=f"lists {ENTRY['path']} twice"):
        parse_metadata(_meta(files=[ENTRY, {**ENTRY, **change}]))


@pytest.mark.parametrize("value", [{"x": [[1]]}, ["srv"], 7, None, "srv-a\nrows_imported=999", "a\x00b"])
@pytest.mark.parametrize("key", ["server_id", "bundle_id"])
def test_a_server_or_bundle_id_that_is_not_a_one_line_string_is_refused(key, value):
    """server_id became a `servers` row of the destination as Python's repr of whatever JSON it
    was ("{'x': [[1]]}"), and a newline in either split import's one-line summary."""
    with pytest.raises(BundleError, match=f"{key} .* is not a single-line string"):
        parse_metadata(_meta(**{key: value}))


def test_the_seeds_empty_server_id_is_accepted():
    assert parse_metadata(_meta(server_id="", bundle_id="5f527b62-6915-4de0-98a0-c683499aa06d"))[0]["server_id"] == ""
