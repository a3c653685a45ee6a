"""Seeded fuzzing of how Gemini answers become OpenAI ones: valid but awkward answers
(aiproxy.testing.gemini_answers) must translate to bodies and chunks that OpenAI's schemas accept,
that say what docs/gemini.md says they say, and a stream must assemble to the JSON answer of the same
content. A failure names its seed: `gemini_answers.gemini_answer(seed)` rebuilds the answer."""

from __future__ import annotations

import json

import pytest

from aiproxy.chat.assemble import StreamAssembler
from aiproxy.errors import UpstreamStreamTruncated
from aiproxy.providers.gemini_response import StreamTranslator, to_openai_response
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label, seeds_from_environment
from aiproxy.testing.gemini_answers import expected_choices, expected_usage, gemini_answer

SEEDS = fuzz_seeds(0, 400)  # the e2e test runs others
MODEL = "gemini-2.5-flash"


def _check_choices(body: dict, answer, seed: int) -> None:
    expected = expected_choices(answer.body)
    assert [choice["index"] for choice in body["choices"]] == list(range(len(expected))), seed_label(seed)
    for choice, want in zip(body["choices"], expected, strict=True):
        message = choice["message"]
        if want.text is None or not want.text.startswith("Gemini stopped without an answer"):
            assert message["content"] == want.text or (want.text is None and not answer.body.get("candidates")
                                                       and message["content"].startswith("Gemini blocked")), \
                f"{seed_label(seed)}: {message['content']!r} != {want.text!r}"
        else:
            assert message["content"].startswith(want.text), seed_label(seed)
        calls = [(call["function"]["name"], json.loads(call["function"]["arguments"]))
                 for call in message.get("tool_calls") or []]
        assert calls == want.calls, seed_label(seed)
        assert [image["image_url"]["url"] for image in message.get("images") or []] == want.images, seed_label(seed)
        assert choice["finish_reason"] == want.finish_reason, seed_label(seed)
        for annotation in message.get("annotations") or []:
            citation = annotation["url_citation"]
            assert 0 <= citation["start_index"] <= citation["end_index"] <= len(message["content"]), seed_label(seed)
    want = expected_usage(answer.body.get("usageMetadata"))
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"],
            usage["prompt_tokens_details"]["cached_tokens"], usage["completion_tokens_details"]["reasoning_tokens"]) == \
        tuple(want.values()), seed_label(seed)


def _comparable(body: dict) -> dict:
    """A completion without what each translation makes anew (ids, time), and without what a stream
    does not carry: `refusal: null`, a choice's logprobs when there are none; the request log's
    assembler records a stream's empty content as null."""
    body = json.loads(json.dumps(body))
    body.update(id="ID", created=0)
    for choice in body["choices"]:
        choice["message"].pop("refusal", None)
        choice["message"]["content"] = choice["message"]["content"] or None
        if choice.get("logprobs") is None:
            choice.pop("logprobs", None)
        for call in choice["message"].get("tool_calls") or ():
            call["id"] = "CALL"
    return body


@pytest.mark.parametrize("one_tool_call", [False, True], ids=["parallel", "one-call"])
def test_awkward_gemini_answers_translate_to_valid_faithful_openai_answers_and_streams(openai_schemas, one_tool_call):
    cases = 0
    for seed in SEEDS:
        try:
            cases += _check_seed(openai_schemas, seed, one_tool_call)
        except Exception as exc:  # the schema's errors and the translators' name no seed
            raise AssertionError(f"{seed_label(seed)}: {exc}") from exc
    assert seeds_from_environment() or cases > len(SEEDS) * 0.8


def _check_seed(openai_schemas, seed: int, one_tool_call: bool) -> int:
    """1 when the answer's stream was checked too, 0 when it ends unfinished (a candidate without a
    finish reason: the client gets upstream_stream_truncated)."""
    answer = gemini_answer(seed)
    body = to_openai_response(answer.body, MODEL, one_tool_call)
    openai_schemas.validate("CreateChatCompletionResponse", body)
    if not one_tool_call:
        _check_choices(body, answer, seed)
    translator = StreamTranslator(MODEL, include_usage=True, one_tool_call=one_tool_call)
    chunks = [chunk for event in answer.events for chunk in translator.feed(event)]
    if not all("finishReason" in candidate for candidate in answer.body.get("candidates") or [{"finishReason": 1}]):
        with pytest.raises(UpstreamStreamTruncated):
            translator.finish()
        return 0
    chunks += translator.finish()
    assembler = StreamAssembler()
    for chunk in chunks:
        openai_schemas.validate("CreateChatCompletionStreamResponse", chunk)
        assembler.add(chunk)
    assert _comparable(assembler.result()) == _comparable(body), seed_label(seed)
    return 1
