"""Incremental Server-Sent Events decoder: bytes in any split, whole events out.

Events end at a blank line, whatever ends its line and the one before (`\\n`, `\\r\\n` or a
lone `\\r`, mixed as they come); the `data` lines of one event are joined with newlines, and a
UTF-8 byte order mark starting the stream is skipped, as the SSE spec (WHATWG HTML §9.2.6) says.
An event of comment lines only (OpenRouter's `: OPENROUTER PROCESSING`, sent while the model has
not started) comes out as a `Comment`, which the REST facade forwards: it keeps the client's
connection, and any proxy on the way, from timing out.
`sse_batches` turns a body into batches of translated events, one batch per network read.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

from aiproxy.deadline import UpstreamDeadline
from aiproxy.errors import UpstreamBadResponse, UpstreamTimeout

# A line's end, then an empty line's. A lone "\r" is no first end before "\n" (they are one "\r\n"),
# and no second end at the buffer's end (it may be the first half of "\r\n": wait for more).
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?=[^\n]))")
_LINE_SPLIT = re.compile(rb"\r\n|\n|\r")


class Comment(str):
    """The text of an event made of comment lines only, lines joined with newlines."""

    __slots__ = ()


_BOM = b"\xef\xbb\xbf"


# An unfinished event at least this long is held as the reads that brought it, each read searched
# alone for the event's end: joined and searched whole at every read, a 2 MB event (a Gemini
# image, long tool arguments) arriving in 1448-byte reads cost 1.3 s of the loop's CPU.
_HOLD_IN_PIECES = 8192


class SSEDecoder:
    __slots__ = ("_buffer", "_pieces", "_held", "_tail", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._pieces: list[bytes] = []  # reads after `_buffer` of a long unfinished event
        self._held = 0  # their bytes
        self._tail = b""  # the last bytes held: an event's end may begin there
        self._started = False  # the stream's first bytes were checked for a byte order mark

    def feed(self, chunk: bytes) -> list[str]:
        """Return the `data` payloads (or `Comment`s) of every event completed by this chunk."""
        if len(self._buffer) >= _HOLD_IN_PIECES:
            window = self._tail + chunk
            if _EVENT_END.search(window) is None:  # the event goes on (a lone "\r" at its end waits)
                self._pieces.append(chunk)
                self._held += len(chunk)
                self._tail = window[-3:]  # an event's end is at most 4 bytes
                return []
            chunk = b"".join((*self._pieces, chunk))
            self._pieces, self._held = [], 0
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer  # maybe a mark cut short by the read: wait for the rest
                return []
            self._started = True
            buffer = buffer.removeprefix(_BOM)  # else its bytes began the first field's name
        if b"\r" not in buffer:
            separator, line_end = b"\n\n", b"\n"  # LF framing (OpenAI's)
        elif buffer.count(b"\r") == buffer.count(b"\n") == buffer.count(b"\r\n"):
            separator, line_end = b"\r\n\r\n", b"\r"  # CRLF framing (Gemini's)
        else:
            return self._feed_any_framing(buffer)  # mixed framings, lone CRs, a CRLF cut in half
        # One framing, one `data: ` line per event (the common case): split once, no regex.
        *raws, self._buffer = buffer.split(separator)
        self._tail = self._buffer[-3:]
        events = []
        for raw in raws:
            if raw.startswith(b"data: ") and line_end not in raw:
                events.append(raw[6:].decode("utf-8", "surrogateescape"))
            else:
                data = _event_data(raw)
                if data is not None:
                    events.append(data)
        return events

    def _feed_any_framing(self, buffer: bytes) -> list[str]:
        self._buffer = buffer
        events = []
        while True:
            match = _EVENT_END.search(self._buffer)
            if match is None:
                # A lone "\r" at the end may be the first half of "\r\n": wait for more.
                self._tail = self._buffer[-3:]
                return events
            raw, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            data = _event_data(raw)
            if data is not None:
                events.append(data)

    @property
    def pending(self) -> int:
        """Bytes of the event not finished yet."""
        return len(self._buffer) + self._held

    def flush(self) -> list[str]:
        """Payload of a final event that the upstream did not terminate with a blank line (a
        comment there keeps nothing alive any more: dropped)."""
        raw = b"".join((self._buffer, *self._pieces))
        self._buffer, self._pieces, self._held = b"", [], 0
        data = _event_data(raw.rstrip(b"\r\n"))
        return [data] if data is not None and type(data) is not Comment else []


def _event_data(raw: bytes) -> str | None:
    data_lines, comment_lines = [], []
    for line in _LINE_SPLIT.split(raw):
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":  # a field name alone: the field, with an empty value
            data_lines.append(b"")
        elif line.startswith(b":"):
            value = line[1:]
            comment_lines.append(value[1:] if value.startswith(b" ") else value)
    if data_lines:
        # Bytes that are not UTF-8 become lone surrogates, which the translators' JSON parser
        # refuses: the upstream's bad event is a 502 (after the events before it), not a crash.
        return b"\n".join(data_lines).decode("utf-8", "surrogateescape")
    if comment_lines:
        return Comment(b"\n".join(comment_lines).decode("utf-8", "replace"))
    return None


class EndOfStream(Exception):
    """Raised by an event translator at the stream's end marker (OpenAI's `[DONE]`)."""


async def sse_batches(
    body: AsyncIterable[bytes], translate: Callable[[str], list], max_event_bytes: int, source: str,
    deadline: UpstreamDeadline,
) -> AsyncIterator[list]:
    """For each read of `body`, the translations of the events it completed, as one batch (empty
    batches are skipped); a `Comment` is passed on as it is. An event still unfinished after
    `max_event_bytes` is UpstreamBadResponse naming `source`: no endless event fills memory. No
    event by `deadline` (the first, or one within its seconds of the one before; a comment is no
    event, it only keeps connections open) is UpstreamTimeout; reading stops there. Ends
    at the end of the body or when `translate` raises EndOfStream; any other exception is raised
    after the batch of the events before it, so an answer cut short by an error event still
    reaches the client up to that event."""
    async for events in _event_groups(body, max_event_bytes, source, deadline):
        batch, stop = _translate_all(events, translate)
        if batch:
            yield batch
        if isinstance(stop, EndOfStream):
            return
        if stop is not None:
            raise stop


async def _event_groups(
    body: AsyncIterable[bytes], max_event_bytes: int, source: str, deadline: UpstreamDeadline
) -> AsyncIterator[list[str]]:
    """The events each read completes, then those a body without a final blank line leaves."""
    decoder = SSEDecoder()
    try:
        async with deadline:
            async for raw in body:
                events = decoder.feed(raw)
                for data in events:
                    if type(data) is not Comment:
                        deadline.progress()
                        break
                deadline.pause()  # while the events are relayed
                yield events
                deadline.resume()
                if decoder.pending > max_event_bytes:
                    raise UpstreamBadResponse.too_large(source, max_event_bytes)
    except TimeoutError:
        raise UpstreamTimeout(
            f"{source} sent no stream event for {deadline.seconds:g} s (its read_timeout; keep-alive comments"
            " do not count); the gateway ended the call."
        ) from None
    yield decoder.flush()


def _translate_all(events: Iterable[str], translate: Callable[[str], list]) -> tuple[list, Exception | None]:
    batch: list = []
    for data in events:
        if type(data) is Comment:
            batch.append(data)
            continue
        try:
            batch += translate(data)
        except Exception as exc:  # noqa: BLE001 - handed back, raised after the batch
            return batch, exc
    return batch, None
