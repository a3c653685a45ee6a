"""The import's transactions: a statement or a COMMIT that fails leaves no transaction (and so no
write lock on a partition the gateway writes) open, and the first error is the one reported."""

import sqlite3

import pytest

from aiproxy.logstore.bundles.importer import _transaction


def test_a_failed_commit_is_rolled_back_not_left_holding_the_lock(tmp_path):
    conn = sqlite3.connect(tmp_path / "p.sqlite3", isolation_level=None)
    conn.executescript("PRAGMA foreign_keys = ON; CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                       "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), _transaction(conn, "IMMEDIATE"):
        conn.execute("INSERT INTO child VALUES (7)")  # checked at COMMIT
    assert not conn.in_transaction and conn.execute("SELECT COUNT(*) FROM child").fetchone() == (0,)


def test_the_statements_error_is_reported(tmp_path):
    conn = sqlite3.connect(tmp_path / "p.sqlite3", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="no such table"), _transaction(conn):
        conn.execute("INSERT INTO nowhere VALUES (1)")
    assert not conn.in_transaction
