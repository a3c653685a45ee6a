"""open_database waits out a "database is locked" raised while the connection's pragmas are
applied (seen once when the live ingester created a day's partition while a search opened it;
the race is too narrow to reproduce on demand, so the lock is injected at peewee's pragma step),
and which read-only opens it may fall back to."""

from __future__ import annotations

import sqlite3
import time

import peewee
import pytest

from aiproxy.logstore.database import open_database, read_only_uris
from aiproxy.logstore.settings import LogStoreSettings


def _settings(tmp_path, busy_timeout_ms: int = 2000) -> LogStoreSettings:
    return LogStoreSettings.from_mapping({"dir": str(tmp_path), "server_id": "s",
                                          "busy_timeout_ms": str(busy_timeout_ms)}, {})


def _locked_for(monkeypatch, failures: int, message: str = "database is locked") -> list[float]:
    real = peewee.SqliteDatabase._set_pragmas
    attempts: list[float] = []

    def set_pragmas(self, conn):
        attempts.append(time.monotonic())
        if len(attempts) <= failures:
            raise peewee.OperationalError(message)
        return real(self, conn)

    monkeypatch.setattr(peewee.SqliteDatabase, "_set_pragmas", set_pragmas)
    return attempts


def test_a_passing_lock_is_waited_out(tmp_path, monkeypatch):
    attempts = _locked_for(monkeypatch, failures=3)
    db = open_database(tmp_path / "p.sqlite3", _settings(tmp_path))
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(attempts) == 4
    db.close()


def test_other_errors_and_a_lock_that_outlasts_the_busy_timeout_are_raised(tmp_path, monkeypatch):
    attempts = _locked_for(monkeypatch, failures=1, message="disk I/O error")
    with pytest.raises(peewee.OperationalError, match="disk I/O error"):
        open_database(tmp_path / "a.sqlite3", _settings(tmp_path))
    assert len(attempts) == 1

    attempts = _locked_for(monkeypatch, failures=10**6)
    started = time.monotonic()
    with pytest.raises(peewee.OperationalError, match="locked"):
        open_database(tmp_path / "b.sqlite3", _settings(tmp_path, busy_timeout_ms=300))
    assert 0.2 < time.monotonic() - started < 1.0


def test_immutable_is_offered_only_when_no_process_has_the_file_open_in_wal_mode(tmp_path):
    """immutable=1 ignores the -wal (commits in it would vanish) and takes no locks (a writer's
    pages could tear): a fallback only for a file with neither -wal nor -shm beside it."""
    path = tmp_path / "ai_proxy_20250905.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    assert [uri.split("?")[1] for uri in read_only_uris(path)] == ["mode=ro"]  # open: -wal and -shm exist
    conn.close()
    assert [uri.split("?")[1] for uri in read_only_uris(path)] == ["mode=ro", "mode=ro&immutable=1"]
    odd = tmp_path / "a dir?#x" / "ai_proxy_20250906.sqlite3"
    odd.parent.mkdir()
    sqlite3.connect(odd).close()
    assert all(sqlite3.connect(uri, uri=True).execute("SELECT 1").fetchone() for uri in read_only_uris(odd))
