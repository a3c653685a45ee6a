"""Stable identities: this server's id (seed §7.3 rules) and the keyed hash of client API keys."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import socket
import uuid
from pathlib import Path


def _read_or_create(path: Path, make: callable, mode: int = 0o600) -> str:
    """Read a one-line file, creating it (with `mode`) when missing or empty; OSError if that
    cannot be done.

    The value is written to a temporary file first and then hard-linked into place, so no
    reader (another worker) ever sees a half-written file, and of two creators one wins."""
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        value = make()
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = path.read_text(encoding="utf-8").strip()
            if existing:  # another worker won the race
                return existing
            os.replace(tmp, path)  # an empty leftover (a crash mid-write, `touch`): replace it
        except OSError:  # a filesystem without hard links
            os.replace(tmp, path)
        return value
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def resolve_server_id(db_dir: str | Path, explicit: str = "", env_name: str = "") -> str:
    """`explicit` (LOGDB_SERVER_ID), else <db_dir>/.server_id (created with a new UUID4), else a
    UUID5 of the host and `env_name` (LOGDB_ENV)."""
    if explicit.strip():
        return explicit.strip()
    with contextlib.suppress(OSError):
        # Readable by all (no secret: every record carries it), so another user reading the store
        # gets the same id rather than the fallback below.
        return _read_or_create(Path(db_dir) / ".server_id", lambda: str(uuid.uuid4()), mode=0o644)
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"ai-proxy|{socket.gethostname()}|{env_name or 'dev'}"))


class KeyHasher:
    """HMAC-SHA256 of a client key under a per-deployment secret: stable across restarts and
    workers, useless for recovering the key. The secret comes from KEY_HASH_SECRET or from
    <log_dir>/.key_hash_secret, created once."""

    def __init__(self, secret: str, log_dir: str | Path) -> None:
        if not secret:
            try:
                secret = _read_or_create(Path(log_dir) / ".key_hash_secret", lambda: secrets.token_hex(32))
            except OSError as exc:  # the same words as the log files' check, which comes after this one
                # Not "or set KEY_HASH_SECRET": the secret is kept in LOG_DIR only while the request log is
                # written there, so setting it led to that check's error on the same directory.
                raise RuntimeError(f"LOG_DIR={log_dir} cannot be written ({exc.filename}: {exc.strerror}): set LOG_DIR"
                                   " to a writable directory, or turn the log files off (ENABLE_FILE_LOGGING=false,"
                                   " REQUEST_LOG_ENABLED=false)") from None
        self._secret = secret.encode()
        self._cache: dict[str, str] = {}

    def __call__(self, key: str | None) -> str | None:
        if not key:
            return None
        digest = self._cache.get(key)
        if digest is None:
            digest = "kh_" + hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:32]
            if len(self._cache) < 10_000:  # bounded: unknown keys from attackers must not grow memory
                self._cache[key] = digest
        return digest


MAX_REQUEST_ID = 128


def metadata_safe(value: str) -> bool:
    """Whether gRPC metadata can carry value: printable ASCII only (no tab, no UTF-8)."""
    return value.isascii() and value.isprintable()


def request_id(given: str | None) -> str:
    """The client's request id (X-Request-ID header or x-request-id metadata) when it is sane, else a new one."""
    if given and len(given) <= MAX_REQUEST_ID and metadata_safe(given):
        return given
    return f"req_{uuid.uuid4().hex}"
