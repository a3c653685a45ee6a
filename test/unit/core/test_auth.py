"""aiproxy.auth: the seed's four Authorization messages, admin vs client keys."""

from __future__ import annotations

import pytest

from aiproxy.auth import Caller, KeyRing, bearer_key
from aiproxy.errors import AuthenticationFailed

MISSING = "Missing Authorization header"
FORMAT = "Invalid Authorization header format. Expected 'Bearer <key>'"
SCHEME = "Invalid Authorization scheme. Expected 'Bearer'"
BAD_KEY = "Invalid or missing API Key"
UNREADABLE = "Invalid Authorization header: send 'Bearer <key>' in printable ASCII"

RING = KeyRing(keys=("sk-client", "sk-other"), admin_keys=("sk-admin",))


def failure(header) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        RING.authenticate(header)
    return info.value


@pytest.mark.parametrize(
    "header,message",
    [
        (None, MISSING),
        ("", MISSING),
        ("sk-client", FORMAT),
        ("Bearer", FORMAT),
        ("Basic c2stY2xpZW50", SCHEME),
        ("Token sk-client", SCHEME),
        ("Bearer sk-wrong", BAD_KEY),
        ("Bearer ", BAD_KEY),
        ("Bearer sk-client-but-longer", BAD_KEY),
        ("Bearer sk-clien", BAD_KEY),
        # What gRPC metadata cannot carry (aiohttp decodes undecodable bytes to surrogates).
        ("Bearer\tsk-client", UNREADABLE),
        ("Bearer ключ", UNREADABLE),
        ("Bearer \udcff\udcfe", UNREADABLE),
    ],
)
def test_the_five_messages(header, message):
    error = failure(header)
    assert error.message == message
    assert error.http_status == 401
    assert error.code == "invalid_api_key"
    assert error.to_body()["error"]["message"] == message


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(scheme):
    assert RING.authenticate(f"{scheme} sk-client") == Caller(key="sk-client", admin=False)


def test_key_is_everything_after_the_first_space():
    assert bearer_key("Bearer a b") == "a b"
    assert bearer_key("Bearer sk-client  ") == "sk-client"


def test_client_and_admin_keys():
    assert RING.authenticate("Bearer sk-client") == Caller(key="sk-client", admin=False)
    assert RING.authenticate("Bearer sk-other").admin is False
    admin = RING.authenticate("Bearer sk-admin")
    assert admin.admin is True and admin.key == "sk-admin"


def test_a_key_that_is_both_client_and_admin_is_admin():
    ring = KeyRing(keys=("k",), admin_keys=("k",))
    assert ring.authenticate("Bearer k").admin is True


def test_no_keys_configured_admits_nobody():
    ring = KeyRing(keys=(), admin_keys=())
    for header in ("Bearer ", "Bearer x", "Bearer  "):
        with pytest.raises(AuthenticationFailed, match=BAD_KEY):
            ring.authenticate(header)


def test_non_ascii_keys_are_refused_before_any_comparison():
    # gRPC metadata carries printable ASCII only, so such a key could never reach the servicer;
    # settings refuse to configure one.
    ring = KeyRing(keys=("ключ-🔑",), admin_keys=())
    with pytest.raises(AuthenticationFailed, match="printable ASCII"):
        ring.authenticate("Bearer ключ-🔑")


@pytest.mark.parametrize("header", ["Bearer k0", "Bearer k4", "Bearer admin-1", "Bearer nobody"])
def test_every_key_is_compared_in_constant_time_whichever_matches(monkeypatch, header):
    """Seed §11 Security: one key was compared in constant time, but a list was searched with an
    early exit, so the time taken told which position matched. Every configured key is compared,
    each with hmac.compare_digest, whether the first, the last, an admin key or none matches."""
    import hmac

    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(b) or real(a, b))
    ring = KeyRing(keys=tuple(f"k{i}" for i in range(5)), admin_keys=("admin-0", "admin-1"))
    try:
        ring.authenticate(header)
    except AuthenticationFailed:
        pass
    assert sorted(compared) == sorted(k.encode() for k in ("k0", "k1", "k2", "k3", "k4", "admin-0", "admin-1"))
