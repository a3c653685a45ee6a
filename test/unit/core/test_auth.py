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
