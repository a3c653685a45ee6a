"""aiproxy.sse.SSEDecoder: whole events out, whatever the chunking of the bytes in."""

from __future__ import annotations

import asyncio
import json

import pytest

from aiproxy.deadline import UpstreamDeadline
from aiproxy.errors import UpstreamBadResponse, UpstreamTimeout
from aiproxy.sse import Comment, EndOfStream, SSEDecoder, sse_batches

OPENAI_STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"H\xc3\xa9llo \xf0\x9f\x8c\x8d"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_EVENTS = [
    "OPENROUTER PROCESSING",
    '{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    "OPENROUTER PROCESSING",
    '{"id":"c1","choices":[{"index":0,"delta":{"content":"Héllo 🌍"}}]}',
    '{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}',
    '{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
    "[DONE]",
]

# Gemini's streamGenerateContent?alt=sse ends events with CRLF CRLF.
GEMINI_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"},"index": 0}]}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": "lo"}],"role": "model"},"finishReason": "STOP",'
    b'"index": 0}],"usageMetadata": {"promptTokenCount": 2,"candidatesTokenCount": 2,"totalTokenCount": 4}}\r\n\r\n'
)
GEMINI_EVENTS = [
    '{"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"},"index": 0}]}',
    '{"candidates": [{"content": {"parts": [{"text": "lo"}],"role": "model"},"finishReason": "STOP",'
    '"index": 0}],"usageMetadata": {"promptTokenCount": 2,"candidatesTokenCount": 2,"totalTokenCount": 4}}',
]

MULTILINE_STREAM = b"event: message\nid: 7\nretry: 100\ndata: first line\ndata:second line\ndata:  two spaces\n: note\n\n"
MULTILINE_EVENTS = ["first line\nsecond line\n two spaces"]

STREAMS = {
    "openai": (OPENAI_STREAM, OPENAI_EVENTS),
    "gemini-crlf": (GEMINI_STREAM, GEMINI_EVENTS),
    "multiline": (MULTILINE_STREAM, MULTILINE_EVENTS),
    "cr-only": (b"data: a\r\rdata: b\rdata: c\r\r", ["a", "b\nc"]),
    "crlf-multiline": (MULTILINE_STREAM.replace(b"\n", b"\r\n"), MULTILINE_EVENTS),
    # Every terminator in one stream: CRLF events, then LF, then CR, then CRLF again.
    "mixed": (b"data: a\r\ndata: b\r\n\r\ndata: c\n\ndata: d\rdata: e\r\rdata: f\r\n\r\n", ["a\nb", "c", "d\ne", "f"]),
    # A blank line whose end differs from the line's before it: LF then CRLF, CRLF then LF, LF then
    # CR, CRLF then CR, CR then CRLF.
    "blank-after-another-end": (b"data: a\n\r\ndata: b\r\n\ndata: c\n\rdata: d\r\n\rdata: e\r\r\ndata: f\n\n",
                                ["a", "b", "c", "d", "e", "f"]),
    # A UTF-8 byte order mark starting the stream is no part of it; one later is a field name's.
    "bom": (b"\xef\xbb\xbfdata: a\n\ndata: b\n\n", ["a", "b"]),
    "bom-later": (b"data: a\n\n\xef\xbb\xbfdata: b\n\n", ["a"]),
    # A field name alone is the field with an empty value.
    "bare-data": (b"data\ndata: x\n\ndata\n\n", ["\nx", ""]),
    # Events longer than the decoder holds in one buffer (it keeps their reads as pieces).
    "long-lf": (b"data: " + b"a" * 9000 + b"\n\ndata: b\n\n", ["a" * 9000, "b"]),
    "long-crlf": (b"data: " + b"a" * 9000 + b"\r\n\r\ndata: b\r\n\r\n", ["a" * 9000, "b"]),
    "long-mixed": (b"data: " + b"a" * 9000 + b"\rdata: c\n\r: x\r\rdata: b\r\n\n", ["a" * 9000 + "\nc", "x", "b"]),
}


def decode(chunks) -> list[str]:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


@pytest.mark.parametrize("name", STREAMS)
def test_whole_stream_in_one_chunk(name):
    stream, expected = STREAMS[name]
    assert decode([stream]) == expected


@pytest.mark.parametrize("name", STREAMS)
def test_split_at_every_byte_boundary(name):
    stream, expected = STREAMS[name]
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]]) == expected, f"cut at {cut}: {stream[:cut][-10:]!r}"


@pytest.mark.parametrize("name", STREAMS)
def test_one_byte_at_a_time(name):
    stream, expected = STREAMS[name]
    assert decode([stream[i : i + 1] for i in range(len(stream))]) == expected


def test_openai_events_are_json_and_done():
    events = [e for e in decode([OPENAI_STREAM]) if type(e) is not Comment]
    assert [json.loads(e)["id"] for e in events[:-1]] == ["c1"] * 4
    assert events[-1] == "[DONE]"


def test_events_arrive_as_soon_as_they_are_complete():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\ndata: tw") == ["one"]
    assert decoder.feed(b"o\n\n") == ["two"]
    assert decoder.flush() == []


def test_a_crlf_event_is_not_ended_by_half_its_terminator():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\n\r") == []
    assert decoder.feed(b"\n") == ["x"]


def test_an_event_of_comments_only_is_a_comment():
    events = decode([b": OPENROUTER PROCESSING\n\n:keep-alive\r\n:  two\r\n\r\n"])
    assert events == ["OPENROUTER PROCESSING", "keep-alive\n two"]
    assert all(type(event) is Comment for event in events)
    assert decode([b"event: ping\n\n"]) == []
    assert decode([b": note\ndata: x\n\n"]) == ["x"] and type(decode([b": note\ndata: x\n\n"])[0]) is str


def test_batches_pass_comments_on_untranslated():
    async def body():
        yield b': OPENROUTER PROCESSING\n\ndata: {"a": 1}\n\n'

    async def collect():
        return [batch async for batch in sse_batches(body(), lambda data: [json.loads(data)], 1 << 20, "Up",
                                                               UpstreamDeadline(60))]

    assert asyncio.run(collect()) == [["OPENROUTER PROCESSING", {"a": 1}]]


def test_flush_returns_an_unterminated_final_event():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b":2}\n') == ['{"a":1}']
    assert decoder.flush() == ['{"b":2}']
    assert decoder.flush() == []  # flushing empties the buffer


@pytest.mark.parametrize("tail", [b"data: last", b"data: last\n", b"data: last\r\n", b"data: last\r"])
def test_flush_handles_any_partial_terminator(tail):
    assert decode([b"data: first\n\n" + tail]) == ["first", "last"]


def test_flush_of_a_partial_comment_or_nothing_is_empty():
    assert SSEDecoder().flush() == []
    decoder = SSEDecoder()
    decoder.feed(b": still processing")
    assert decoder.flush() == []


def test_empty_data_field_is_an_empty_event():
    assert decode([b"data:\n\n"]) == [""]
    assert decode([b"data: \n\n"]) == [""]


def test_multibyte_utf8_split_inside_a_character():
    payload = "日本語 🌍".encode()
    stream = b"data: " + payload + b"\n\n"
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]]) == ["日本語 🌍"]


def _batches(reads: list[bytes], translate, max_event_bytes: int = 1 << 20) -> tuple[list[list], Exception | None]:
    """Run sse_batches over these network reads: the batches it yielded and what it raised."""

    async def body():
        for raw in reads:
            yield raw

    async def run():
        got = []
        try:
            async for batch in sse_batches(body(), translate, max_event_bytes, "The upstream provider 'p'",
                                           UpstreamDeadline(60)):
                got.append(batch)
        except Exception as exc:  # noqa: BLE001 - returned for the assertion
            return got, exc
        return got, None

    return asyncio.run(run())


def test_an_event_that_never_ends_is_refused_once_over_the_limit_after_the_events_before_it():
    reads = [b'data: {"n": 1}\n\ndata: {"n": ', b"2" * 600, b"2" * 600, b"}\n\n"]
    got, error = _batches(reads, _json_or_end, max_event_bytes=1000)
    assert got == [[{"n": 1}]]  # the finished event reached the client; reading stopped at the limit
    assert isinstance(error, UpstreamBadResponse) and error.http_status == 502
    assert error.message.startswith("The upstream provider 'p' sent an answer larger than the gateway relays (1000 bytes")
    got, error = _batches(reads, _json_or_end, max_event_bytes=2000)  # the same stream under a larger limit
    assert error is None and got[-1] == [{"n": int("2" * 1200)}]


def test_a_long_event_refused_over_the_limit_counts_every_read_held():
    reads = [b'data: {"n": '] + [b"2" * 5000] * 4
    got, error = _batches(reads, _json_or_end, max_event_bytes=15_000)
    assert got == [] and isinstance(error, UpstreamBadResponse) and error.http_status == 502


def test_a_long_event_in_small_reads_costs_about_what_it_costs_in_one():
    """Was: every read of an unfinished event joined and searched all of it again, so a 2 MB event
    (a Gemini image) in 1448-byte reads (a network's segments) cost 1.3 s of the loop's CPU, 35x
    the same event in 64 KiB reads. A ratio in one process, the best of three: not a timing target."""
    import time

    event = b'data: {"x": "' + b"a" * 2_000_000 + b'"}\n\n'

    def cost(size: int) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            assert len(decode([event[i : i + size] for i in range(0, len(event), size)])) == 1
            best = min(best, time.process_time() - started)
        return best

    assert cost(1448) < 8 * max(cost(65536), 0.002)


def _json_or_end(data: str) -> list:
    if data == "[DONE]":
        raise EndOfStream
    value = json.loads(data)
    if "error" in value:
        raise RuntimeError(value["error"])
    return [value]


def test_one_batch_per_read_with_the_events_it_completed():
    reads = [b'data: {"n": 1}\n\ndata: {"n": 2}\n\ndata: {"n"', b': 3}\n\n', b"", b'data: {"n": 4}']
    got, error = _batches(reads, _json_or_end)
    # The empty read completes no event (no batch); the unterminated last event is flushed at the end.
    assert got == [[{"n": 1}, {"n": 2}], [{"n": 3}], [{"n": 4}]] and error is None


def test_end_of_stream_stops_and_drops_what_follows_it_in_the_same_read():
    got, error = _batches([b'data: {"n": 1}\n\ndata: [DONE]\n\ndata: {"n": 2}\n\n', b'data: {"n": 3}\n\n'],
                          _json_or_end)
    assert got == [[{"n": 1}]] and error is None


def test_an_error_event_is_raised_after_the_chunks_before_it():
    got, error = _batches([b'data: {"n": 1}\n\ndata: {"error": "boom"}\n\ndata: {"n": 2}\n\n'], _json_or_end)
    assert got == [[{"n": 1}]]
    assert isinstance(error, RuntimeError) and str(error) == "boom"


async def _relayed(reads, deadline: UpstreamDeadline, relay_seconds: float = 0.0) -> list:
    """sse_batches over reads (bytes, or a float: that long with nothing new), each batch relayed
    for `relay_seconds` (a client slow to take it)."""

    async def body():
        for read in reads:
            if isinstance(read, float):
                await asyncio.sleep(read)
            else:
                yield read

    got = []
    async for batch in sse_batches(body(), lambda data: [data], 1 << 20, "The upstream provider 'p'", deadline):
        got.append(batch)
        await asyncio.sleep(relay_seconds)
    return got


def test_comments_alone_are_no_progress():
    async def run():
        deadline = UpstreamDeadline(0.3)
        async with deadline:  # as send_streaming: the request went out
            deadline.sent()
        await _relayed([b"data: first\n\n", *[b": PROCESSING\n\n", 0.1] * 10], deadline)

    with pytest.raises(UpstreamTimeout, match="sent no stream event for 0.3 s"):
        asyncio.run(run())


def test_time_spent_relaying_a_batch_to_the_client_is_not_counted():
    """A client slower than the deadline is the client's bound to judge: no cancellation lands in its
    write, and the upstream is not blamed."""

    async def run():
        deadline = UpstreamDeadline(0.2)
        async with deadline:
            deadline.sent()
        return await _relayed([b"data: a\n\n", 0.1, b"data: b\n\n", 0.1, b"data: c\n\n"], deadline, relay_seconds=0.5)

    assert asyncio.run(run()) == [["a"], ["b"], ["c"]]


def test_a_read_timeout_of_0_is_no_bound():
    async def run():
        deadline = UpstreamDeadline(0)
        async with deadline:
            deadline.sent()
        return await _relayed([b"data: a\n\n", 0.1, b"data: b\n\n"], deadline)

    assert asyncio.run(run()) == [["a"], ["b"]]
