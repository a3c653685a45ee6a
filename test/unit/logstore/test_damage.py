"""Which SQLite errors mean "this file cannot be used", and how a skipped partition is reported."""

import sqlite3
from pathlib import Path

import grpc
import peewee
import pytest

from aiproxy.logstore.damage import (
    MAX_WARNINGS,
    PartitionUnreadable,
    Unreadable,
    converted,
    is_file_error,
)

PART = Path("/srv/secret/db/2025/W36/ai_proxy_2025W36.sqlite3")


def _error_from(db_file: Path, sql: str) -> Exception:
    db = peewee.SqliteDatabase(str(db_file))
    try:
        db.execute_sql(sql)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return exc
    finally:
        db.close()
    raise AssertionError("no error")


def test_file_errors_are_told_from_sql_errors_and_locks(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database" * 100)
    assert is_file_error(_error_from(junk, "SELECT 1 FROM sqlite_master"))  # peewee-wrapped NOTADB
    good = tmp_path / "good.sqlite3"
    assert not is_file_error(_error_from(good, "SELECT nope FROM sqlite_master"))  # a bug stays a bug
    holder = sqlite3.connect(good)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(good, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        waiter.execute("SELECT * FROM t")
    assert not is_file_error(locked.value)  # busy is not damage
    holder.rollback()


def test_converted_names_the_partition_by_day_for_clients(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"x" * 5000)
    with pytest.raises(PartitionUnreadable) as caught, converted(PART):
        raise _error_from(junk, "SELECT 1 FROM sqlite_master")
    error = caught.value
    assert error.grpc_code == grpc.StatusCode.DATA_LOSS and error.http_status == 500
    assert "2025-09-01..2025-09-07 (ai_proxy_2025W36.sqlite3): file is not a database" in error.message
    assert "/srv/secret" not in error.message and "/srv/secret" not in error.warning()
    assert error.warning(local=True).startswith(f"skipped {PART}: file is not a database; ")


def test_warnings_name_a_few_partitions_then_count_the_rest():
    unreadable = Unreadable()
    for day in range(1, 25):
        unreadable.note(PartitionUnreadable(Path(f"/db/2025/09/ai_proxy_202509{day:02d}.sqlite3"), "bad"))
    warnings = unreadable.warnings()
    assert len(warnings) == MAX_WARNINGS + 1 and warnings[-1] == "skipped 14 more partitions that cannot be read"
    assert warnings[0].startswith("skipped the partition for 2025-09-01 (ai_proxy_20250901.sqlite3): bad; ")
