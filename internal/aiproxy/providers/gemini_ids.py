"""Tool-call ids that carry Gemini's per-call state through the client, so the gateway stays stateless.

Gemini 3 returns a `thoughtSignature` with a function call and answers 400 when a later turn replays
that call without it; Gemini may also name the call (`functionCall.id`), which the matching
`functionResponse.id` must repeat. OpenAI clients keep nothing but the tool-call id, so both ride
in it: `call_<24 hex>` alone, or `call_<24 hex>_<base64url(JSON {"s": signature, "i": id})>`.
An id the gateway did not issue (another model's history) decodes to nothing.
"""

from __future__ import annotations

import base64
import binascii
import secrets

import orjson

# Google's documented value for replayed function calls whose signature is unknown.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_PREFIX_LEN = len("call_") + 24


def new_tool_call_id(signature: str | None = None, gemini_id: str | None = None) -> str:
    base = "call_" + secrets.token_hex(12)
    if not signature and not gemini_id:
        return base
    state = {}
    if signature:
        state["s"] = signature
    if gemini_id:
        state["i"] = gemini_id
    return base + "_" + base64.urlsafe_b64encode(orjson.dumps(state)).rstrip(b"=").decode("ascii")


def decode_tool_call_id(call_id: str) -> tuple[str | None, str | None]:
    """(thoughtSignature, Gemini call id) carried by an id from new_tool_call_id, else (None, None)."""
    if len(call_id) <= _PREFIX_LEN + 1 or not call_id.startswith("call_") or call_id[_PREFIX_LEN] != "_":
        return None, None
    encoded = call_id[_PREFIX_LEN + 1 :]
    try:
        state = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None, None
    if not isinstance(state, dict):
        return None, None
    signature, gemini_id = state.get("s"), state.get("i")
    return (signature if isinstance(signature, str) else None), (
        gemini_id if isinstance(gemini_id, str) else None
    )
