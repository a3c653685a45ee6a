"""aiproxy.identity: the keyed API-key hash and the server id (seed §7.3 precedence)."""

from __future__ import annotations

import os
import re
import stat
import threading
import uuid

import pytest

from aiproxy.identity import KeyHasher, resolve_server_id

KEY = "sk-aiproxy-ThisIsAClientKey123"


# --- KeyHasher --------------------------------------------------------------------------------


def test_hash_is_stable_across_instances_sharing_the_secret_file(tmp_path):
    first = KeyHasher("", tmp_path)(KEY)
    restarted = KeyHasher("", tmp_path)(KEY)  # a restart reads the same .key_hash_secret
    assert first == restarted
    assert re.fullmatch(r"kh_[0-9a-f]{32}", first)


def test_hash_differs_for_different_secrets(tmp_path):
    a = KeyHasher("", tmp_path / "a")(KEY)
    b = KeyHasher("", tmp_path / "b")(KEY)
    assert a != b
    assert KeyHasher("secret-1", tmp_path)(KEY) != KeyHasher("secret-2", tmp_path)(KEY)


def test_explicit_secret_is_stable_and_writes_no_file(tmp_path):
    assert KeyHasher("s", tmp_path)(KEY) == KeyHasher("s", tmp_path / "elsewhere")(KEY)
    assert not (tmp_path / ".key_hash_secret").exists()


def test_hash_never_contains_the_key(tmp_path):
    hasher = KeyHasher("", tmp_path)
    for key in (KEY, "0123456789abcdef", "a" * 200, "sk-" + "f" * 40):
        digest = hasher(key)
        assert key not in digest
        assert hasher(key) == digest
    assert hasher("k1") != hasher("k2")


def test_no_key_hashes_to_none(tmp_path):
    hasher = KeyHasher("s", tmp_path)
    assert hasher(None) is None
    assert hasher("") is None


def test_secret_file_is_created_once_with_mode_0600(tmp_path):
    KeyHasher("", tmp_path)
    path = tmp_path / ".key_hash_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", secret)
    KeyHasher("", tmp_path)
    assert path.read_text() == secret  # never rewritten


def test_an_empty_secret_file_is_replaced_not_fatal(tmp_path):
    (tmp_path / ".key_hash_secret").write_text("")  # e.g. a crash between create and write
    first = KeyHasher("", tmp_path)(KEY)
    assert re.fullmatch(r"[0-9a-f]{64}", (tmp_path / ".key_hash_secret").read_text().strip())
    assert KeyHasher("", tmp_path)(KEY) == first


def test_log_dir_is_created_when_missing(tmp_path):
    KeyHasher("", tmp_path / "new" / "logs")
    assert (tmp_path / "new" / "logs" / ".key_hash_secret").is_file()


def test_unwritable_log_dir_without_secret_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError) as info:
        KeyHasher("", blocker / "logs")
    # README: the line names LOG_DIR and the OS error (it said only "set KEY_HASH_SECRET", which
    # then led to LOG_DIR's own error), and advises what lets the gateway start: not "or set
    # KEY_HASH_SECRET" (the secret is read from LOG_DIR only while the request log is written there).
    message = str(info.value)
    assert f"LOG_DIR={blocker / 'logs'}" in message and "Not a directory" in message
    assert "KEY_HASH_SECRET" not in message and "REQUEST_LOG_ENABLED=false" in message


# --- resolve_server_id ------------------------------------------------------------------------


def test_env_wins_over_the_file(tmp_path):
    (tmp_path / ".server_id").write_text("from-file\n")
    assert resolve_server_id(tmp_path, explicit="  from-env  ") == "from-env"


def test_file_is_used_when_env_is_empty(tmp_path):
    (tmp_path / ".server_id").write_text("  from-file \n")
    assert resolve_server_id(tmp_path) == "from-file"
    assert resolve_server_id(tmp_path, explicit="   ") == "from-file"


def test_a_new_uuid4_is_created_once_and_reused(tmp_path):
    db_dir = tmp_path / "logs" / "db"  # created on demand
    first = resolve_server_id(db_dir)
    assert uuid.UUID(first).version == 4
    assert (db_dir / ".server_id").read_text().strip() == first
    assert resolve_server_id(db_dir) == first


def test_unwritable_dir_falls_back_to_a_stable_host_uuid5(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    first = resolve_server_id(blocker / "db", env_name="prod")
    assert uuid.UUID(first).version == 5
    assert resolve_server_id(blocker / "db", env_name="prod") == first
    assert resolve_server_id(blocker / "db", env_name="dev") != first


def test_the_server_id_file_is_readable_by_whoever_reads_the_store(tmp_path):
    """It was created 0600 like the key-hash secret: another user reading the store (docs/logstore.md,
    Read-only stores) could not read it and got the host's uuid5 instead, so `bundle create` named
    the bundle and its metadata after a server that never wrote a row. The id is no secret: every
    record and bundle carries it."""
    old_umask = os.umask(0o022)
    try:
        server_id = resolve_server_id(tmp_path / "db")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "db" / ".server_id").stat().st_mode) == 0o644
    assert (tmp_path / "db" / ".server_id").read_text().strip() == server_id


def test_an_empty_server_id_file_gets_a_new_uuid4(tmp_path):
    (tmp_path / ".server_id").write_text("\n")  # seed rule: the file's content only if non-empty
    first = resolve_server_id(tmp_path)
    assert uuid.UUID(first).version == 4
    assert (tmp_path / ".server_id").read_text().strip() == first


def test_concurrent_creators_agree_on_one_value(tmp_path):
    barrier = threading.Barrier(16)
    results = []

    def worker():
        barrier.wait()
        results.append(resolve_server_id(tmp_path / "db"))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert (tmp_path / "db" / ".server_id").read_text().strip() == results[0]
    assert [p.name for p in (tmp_path / "db").iterdir()] == [".server_id"]  # no temporary files left
