"""Client API keys: parsing the Authorization header and constant-time key checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiproxy.errors import AuthenticationFailed
from aiproxy.identity import metadata_safe


@dataclass(frozen=True, slots=True)
class Caller:
    key: str | None  # never logged; only its hash is
    admin: bool = False


def ensure_readable(header: str) -> None:
    """Refuse an Authorization value gRPC metadata cannot carry; no key of ours holds such characters.
    The value is never quoted back."""
    if not metadata_safe(header):
        raise AuthenticationFailed("Invalid Authorization header: send 'Bearer <key>' in printable ASCII")


def bearer_key(header: str | None) -> str:
    """The key of an `Authorization: Bearer <key>` header. Failures carry one of the five messages
    clients see: the seed's four (a wrong key's is KeyRing.authenticate's) and an unreadable value's."""
    if not header:
        raise AuthenticationFailed("Missing Authorization header")
    ensure_readable(header)
    scheme, sep, key = header.partition(" ")
    if not sep:
        raise AuthenticationFailed("Invalid Authorization header format. Expected 'Bearer <key>'")
    if scheme.lower() != "bearer":
        raise AuthenticationFailed("Invalid Authorization scheme. Expected 'Bearer'")
    return key.strip()


class KeyRing:
    def __init__(self, keys: tuple[str, ...], admin_keys: tuple[str, ...]) -> None:
        self._keys = [k.encode() for k in keys]
        self._admin = [k.encode() for k in admin_keys]

    @staticmethod
    def _matches(candidate: bytes, keys: list[bytes]) -> bool:
        found = False
        for key in keys:  # no early exit: the time taken does not tell which key matched
            found |= hmac.compare_digest(candidate, key)
        return found

    def authenticate(self, header: str | None) -> Caller:
        key = bearer_key(header)
        candidate = key.encode()
        admin = self._matches(candidate, self._admin)
        client = self._matches(candidate, self._keys)  # even after an admin match: no early exit
        if not (admin or client):
            raise AuthenticationFailed("Invalid or missing API Key")
        return Caller(key=key, admin=admin)
