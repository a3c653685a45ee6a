import re

from aiproxy.providers.gemini_ids import decode_tool_call_id, new_tool_call_id


def test_plain_ids_are_unique_and_carry_nothing():
    ids = {new_tool_call_id() for _ in range(1000)}
    assert len(ids) == 1000
    for call_id in ids:
        assert re.fullmatch(r"call_[0-9a-f]{24}", call_id)
        assert decode_tool_call_id(call_id) == (None, None)


def test_signature_and_gemini_id_round_trip_in_an_id_safe_alphabet():
    call_id = new_tool_call_id("CikBcsja+/SIG==", "fc-1")
    assert re.fullmatch(r"call_[0-9a-f]{24}_[A-Za-z0-9_-]+", call_id)
    assert decode_tool_call_id(call_id) == ("CikBcsja+/SIG==", "fc-1")
    assert decode_tool_call_id(new_tool_call_id(signature="s")) == ("s", None)
    assert decode_tool_call_id(new_tool_call_id(gemini_id="g")) == (None, "g")


def test_foreign_ids_decode_to_nothing():
    for foreign in [
        "call_abc123",
        "call_0123456789abcdef01234567_!!notbase64",
        "toolu_01A09q90qw90lq917835lq9",
        "call_0123456789abcdef01234567_WzEsMl0",
        "",
    ]:
        assert decode_tool_call_id(foreign) == (None, None)
