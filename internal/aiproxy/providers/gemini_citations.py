"""Gemini's `citationMetadata` and `groundingMetadata` -> OpenAI `url_citation` annotations.

Gemini measures both in UTF-8 bytes (citation.proto `CitationSource`, generative_service.proto
`Segment`: "measured in bytes"); a grounding `Segment` is relative to the part `partIndex` names.
OpenAI's `start_index`/`end_index` count characters of `message.content`, which joins only the
visible text parts. So each offset is re-counted in characters of the part (or of the whole text, for
citations and for segments that only fit there, as in a stream whose parts came in earlier events),
then moved by where that text starts in `content`. Choices are in docs/gemini.md.
"""

from __future__ import annotations

from loguru import logger

_SOURCE_KINDS = ("web", "retrievedContext", "maps")  # GroundingChunk's oneof, each with uri and title


class Texts:
    """Where the candidate's text lies in `content`: `parts` maps a part's position to (its
    character offset in `content`, its text); `content` is the visible text so far. `streamed`:
    the parts are one event's, and a segment is read in the whole text first (a stream's segments
    count the text of every event)."""

    __slots__ = ("content", "parts", "streamed")

    def __init__(self, content: str, parts: dict[int, tuple[int, str]], streamed: bool) -> None:
        self.content = content
        self.parts = parts
        self.streamed = streamed


def annotations(candidate: dict, texts: Texts) -> list[dict]:
    """The candidate's citations and grounding supports as `url_citation` annotations, in Gemini's order.
    Sources without a URI, and spans that fall outside the text, are left out (debug log)."""
    out = []
    grounding = candidate.get("groundingMetadata") or {}
    chunks = grounding.get("groundingChunks") or []
    for support in grounding.get("groundingSupports") or ():
        segment = support.get("segment") or {}
        span = _span(segment, texts)
        for position in support.get("groundingChunkIndices") or ():
            source = _chunk_source(chunks[position]) if type(position) is int and 0 <= position < len(chunks) else None
            if span and source:
                out.append(_citation(*source, span))
            else:
                logger.debug("gemini: dropping grounding support {} of chunk {}", segment, position)
    for citation in (candidate.get("citationMetadata") or {}).get("citationSources") or ():
        span = _span(citation, texts, in_part=False)
        uri = citation.get("uri")
        if span and uri and isinstance(uri, str):
            out.append(_citation(uri, "", span, citation.get("license")))
        else:
            logger.debug("gemini: dropping citation source {}", citation)
    return out


def _chunk_source(chunk) -> tuple[str, str] | None:
    for kind in _SOURCE_KINDS:
        source = chunk.get(kind) if isinstance(chunk, dict) else None
        if isinstance(source, dict) and source.get("uri") and isinstance(source["uri"], str):
            title = source.get("title")
            return source["uri"], title if isinstance(title, str) else ""
    return None


def _citation(url: str, title: str, span: tuple[int, int], code_license=None) -> dict:
    citation = {"url": url, "title": title, "start_index": span[0], "end_index": span[1]}
    if code_license and isinstance(code_license, str):  # a code citation's licence (GitHub sources)
        citation["license"] = code_license
    return {"type": "url_citation", "url_citation": citation}


def _span(where: dict, texts: Texts, in_part: bool = True) -> tuple[int, int] | None:
    """(start, end) in characters of `content` for byte offsets `startIndex`/`endIndex` (proto3 JSON
    leaves out zeros). A segment is read in its part first (in the whole text first when streamed),
    the other reading is the fallback, and where both fit, the one whose text is the segment's `text` wins."""
    start, end = where.get("startIndex", 0), where.get("endIndex", 0)
    if type(start) is not int or type(end) is not int or not 0 <= start <= end:
        return None
    bases = [(0, texts.content)]
    part = texts.parts.get(where.get("partIndex", 0)) if in_part else None
    if part:
        bases.insert(len(bases) if texts.streamed else 0, part)
    expected = where.get("text")
    fits = []
    for offset, text in bases:
        raw = text.encode()
        if end <= len(raw):
            span = (offset + _chars(raw, start), offset + _chars(raw, end))
            if not expected or texts.content[span[0]:span[1]] == expected:
                return span
            fits.append(span)
    return fits[0] if fits else None


def _chars(raw: bytes, offset: int) -> int:
    """Characters in the first `offset` bytes (an offset inside a character counts it out)."""
    return len(raw[:offset].decode("utf-8", "ignore"))
