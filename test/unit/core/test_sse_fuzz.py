"""Seeded fuzzing of how upstream event streams are read, against a reference reader of the SSE spec:
valid but awkward streams (aiproxy.testing.awkward_sse), cut into reads anywhere, through the
decoder, the OpenAI-compatible and Gemini streams and the request log's assembler. A failure names
its seed: `awkward_sse.openai_stream(seed)` rebuilds the stream."""

from __future__ import annotations

import asyncio
import json

import httpx

from aiproxy.chat.assemble import StreamAssembler
from aiproxy.config import ProviderSettings
from aiproxy.deadline import UpstreamDeadline
from aiproxy.errors import UpstreamError
from aiproxy.providers.gemini import GeminiStream
from aiproxy.providers.gemini_errors import gemini_error
from aiproxy.providers.gemini_response import StreamTranslator
from aiproxy.providers.openai_compat import _OpenAIStream
from aiproxy.sse import Comment, SSEDecoder
from aiproxy.testing.awkward_sse import (
    gemini_expected,
    gemini_stream,
    openai_expected,
    openai_stream,
    reference_completion,
    whatwg_events,
    without_fresh_ids,
)
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label

SEEDS = fuzz_seeds(0, 200)  # of each provider's streams; the e2e test runs others


def _check_decoded(case) -> None:
    """The decoder reads the spec's events, and the spec's reader the generator's (JSON whitespace aside)."""
    decoder = SSEDecoder()
    decoded = [event for read in case.writes for event in decoder.feed(read)] + decoder.flush()
    reference = whatwg_events(case.body)
    assert [event for event in decoded if type(event) is not Comment] == reference, seed_label(case.seed)
    payloads = [json.loads(data) for data in reference if not data.startswith("[DONE]")]
    assert payloads[:len(case.events)] == case.events, seed_label(case.seed)


def _response(reads: list[bytes]) -> httpx.Response:
    async def body():
        for read in reads:
            yield read

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body(),
                          request=httpx.Request("POST", "http://upstream.test/v1/chat/completions"))


async def _drain(stream) -> tuple[list[dict], Exception | None]:
    chunks = []
    try:
        async for batch in stream:
            chunks += [chunk for chunk in batch if type(chunk) is not Comment]
    except Exception as exc:  # noqa: BLE001 - compared by the caller
        return chunks, exc
    return chunks, None


def _assembled(chunks: list[dict], usage: dict | None) -> dict:
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.result(fallback_usage=usage)


def test_openai_streams_are_relayed_and_assembled_as_the_spec_reads_them():
    settings = ProviderSettings(name="openrouter", kind="openai")
    for seed in SEEDS:
        case = openai_stream(seed)
        _check_decoded(case)
        expected, failure = openai_expected(case.body)
        stream = _OpenAIStream(settings, _response(case.writes), UpstreamDeadline(60), include_usage=True)
        chunks, error = asyncio.run(_drain(stream))
        assert chunks == expected, seed_label(seed)
        if failure is None:
            assert error is None, f"{seed_label(seed)}: {error!r}"
        else:
            assert isinstance(error, UpstreamError), f"{seed_label(seed)}: {error!r}"
            assert (error.http_status, error.message) == (failure["code"], failure["message"]), seed_label(seed)
        assert _assembled(chunks, stream.usage) == reference_completion(expected), seed_label(seed)


def test_gemini_streams_are_relayed_and_assembled_as_the_spec_reads_them():
    for seed in SEEDS:
        case = gemini_stream(seed)
        _check_decoded(case)
        stream = GeminiStream("gemini", gemini_error, _response(case.writes), UpstreamDeadline(60),
                              StreamTranslator("gemini-2.5-flash", include_usage=True), 1 << 24)
        chunks, error = asyncio.run(_drain(stream))
        assert error is None, f"{seed_label(seed)}: {error!r}"
        assert without_fresh_ids(chunks) == without_fresh_ids(gemini_expected(case.body)), seed_label(seed)
        assembled = _assembled(chunks, stream.usage)
        assert without_fresh_ids([assembled]) == [reference_completion(without_fresh_ids(chunks))], seed_label(seed)
