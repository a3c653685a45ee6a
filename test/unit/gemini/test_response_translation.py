"""Gemini GenerateContentResponse -> OpenAI chat.completion (wire-formats.md §4.2–4.4)."""

import re
from unittest.mock import ANY

import pytest

from aiproxy.providers.gemini_ids import decode_tool_call_id
from aiproxy.providers.gemini_response import (
    StreamTranslator,
    block_explanation,
    finish_reason,
    to_openai_response,
    usage,
)

USAGE = {
    "promptTokenCount": 83,
    "candidatesTokenCount": 14,
    "thoughtsTokenCount": 104,
    "totalTokenCount": 201,
}
OPENAI_USAGE = {
    "prompt_tokens": 83,
    "completion_tokens": 118,
    "total_tokens": 201,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 104},
}


def completion(choices, usage_body=OPENAI_USAGE):
    return {
        "id": ANY,
        "object": "chat.completion",
        "created": ANY,
        "model": "gemini-2.5-flash",
        "choices": choices,
        "usage": usage_body,
        "system_fingerprint": "fp_gemini_de40daba",
    }


def test_text_answer():
    data = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello"}, {"text": " there"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": USAGE,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
    }
    body = to_openai_response(data, "gemini-2.5-flash")
    assert body == completion(
        [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ]
    )
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", body["id"])
    assert body["id"] != to_openai_response(data, "gemini-2.5-flash")["id"]


def test_function_calls_get_unique_ids_json_arguments_and_tool_calls_finish():
    data = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}},
                            "thoughtSignature": "CikBcsja",
                        },
                        {"functionCall": {"name": "getTime"}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
                "finishMessage": "Model generated function call(s).",
            }
        ],
        "usageMetadata": USAGE,
    }
    body = to_openai_response(data, "gemini-2.5-flash")
    calls = body["choices"][0]["message"]["tool_calls"]
    assert body == completion(
        [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": ANY,
                            "type": "function",
                            "function": {"name": "getWeather", "arguments": '{"location":"Tokyo"}'},
                        },
                        {"id": ANY, "type": "function", "function": {"name": "getTime", "arguments": "{}"}},
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ]
    )
    assert calls[0]["id"] != calls[1]["id"]
    assert all(call["id"].startswith("call_") for call in calls)
    assert decode_tool_call_id(calls[0]["id"]) == ("CikBcsja", None)
    assert decode_tool_call_id(calls[1]["id"]) == (None, None)


def test_every_candidate_becomes_a_choice_in_index_order_and_thoughts_are_dropped():
    data = {
        "candidates": [
            {"content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS", "index": 1},
            {
                "content": {"parts": [{"text": "thinking…", "thought": True}, {"text": "A"}]},
                "finishReason": "STOP",
                "index": 0,
            },
        ]
    }
    choices = to_openai_response(data, "gemini-2.5-flash")["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]


def test_safety_stop_without_content_is_an_empty_content_filter_answer():
    data = {
        "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}],
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
    }
    assert to_openai_response(data, "gemini-2.5-flash")["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]


def test_blocked_prompt_is_a_content_filter_answer_with_an_explanation():
    data = {
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
            ],
        },
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
    }
    explanation = (
        "Gemini blocked this prompt and generated no answer (blockReason: SAFETY). "
        "Flagged: HARM_CATEGORY_DANGEROUS_CONTENT (HIGH)."
    )
    assert to_openai_response(data, "gemini-2.5-flash") == completion(
        [
            {
                "index": 0,
                "message": {"role": "assistant", "content": explanation, "refusal": None},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        ],
        {
            "prompt_tokens": 8,
            "completion_tokens": 0,
            "total_tokens": 8,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    )
    assert (
        block_explanation({"blockReason": "OTHER"})
        == "Gemini blocked this prompt and generated no answer (blockReason: OTHER)."
    )


@pytest.mark.parametrize(
    ("gemini", "has_calls", "openai"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("LANGUAGE", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        # wire-formats §4.3: only STOP with calls is tool_calls; the call-failure reasons are stop even
        # when the candidate holds a call (an undeclared tool, one call too many): not calls to run.
        ("UNEXPECTED_TOOL_CALL", True, "stop"),
        ("TOO_MANY_TOOL_CALLS", True, "stop"),
        ("MALFORMED_FUNCTION_CALL", True, "stop"),
        ("OTHER", True, "stop"),
        ("OTHER", False, "stop"),
        ("FINISH_REASON_UNSPECIFIED", False, "stop"),
        ("SOMETHING_NEW", False, "stop"),
        (None, False, "stop"),
    ],
)
def test_finish_reasons(gemini, has_calls, openai):
    assert finish_reason(gemini, has_calls) == openai


def test_usage_counts_thoughts_cached_and_tool_prompt_tokens():
    metadata = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 60,
        "toolUsePromptTokenCount": 10,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 160,
    }
    assert usage(metadata) == {
        "prompt_tokens": 110,
        "completion_tokens": 50,
        "total_tokens": 160,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }


def test_usage_total_is_the_sum_when_gemini_disagrees_and_missing_counters_are_zero():
    assert usage({"promptTokenCount": 4, "thoughtsTokenCount": 7, "totalTokenCount": 4})["total_tokens"] == 11
    assert usage(None) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_logprobs_are_mapped():
    data = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Hi!"}]},
                "finishReason": "STOP",
                "index": 0,
                "logprobsResult": {
                    "chosenCandidates": [
                        {"token": "Hi", "logProbability": -0.1},
                        {"token": "!", "logProbability": -0.5},
                    ],
                    "topCandidates": [
                        {
                            "candidates": [
                                {"token": "Hi", "logProbability": -0.1},
                                {"token": "Hello", "logProbability": -2.5},
                            ]
                        },
                        {"candidates": [{"token": "!", "logProbability": -0.5}]},
                    ],
                },
            }
        ]
    }
    assert to_openai_response(data, "m")["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Hello", "logprob": -2.5, "bytes": [72, 101, 108, 108, 111]},
                ],
            },
            {
                "token": "!",
                "logprob": -0.5,
                "bytes": [33],
                "top_logprobs": [{"token": "!", "logprob": -0.5, "bytes": [33]}],
            },
        ],
        "refusal": None,
    }



def test_token_counts_that_are_not_numbers_count_zero():
    assert usage({"promptTokenCount": "3", "candidatesTokenCount": None, "totalTokenCount": 2})["total_tokens"] == 0
    translator = StreamTranslator("m", include_usage=True)
    translator.feed({"usageMetadata": 5})
    assert translator.usage is None


def test_system_fingerprint_is_the_seeds_stable_across_processes():
    # The seed's `fp_gemini_` + 8 hex digits of the model, but from SHA-256 rather than Python's
    # per-process hash(): the same model gives the same value after a restart, on every worker.
    assert to_openai_response({"candidates": []}, "gemini-2.5-flash")["system_fingerprint"] == "fp_gemini_de40daba"
    translator = StreamTranslator("gemini-2.0-flash-001", include_usage=True)
    chunks = translator.feed({"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}]})
    chunks += translator.finish()
    assert {chunk["system_fingerprint"] for chunk in chunks} == {"fp_gemini_723041c7"}


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PNG_URL = f"data:image/png;base64,{PNG}"


def image_entry(url):
    return {"type": "image_url", "image_url": {"url": url}}


def test_images_become_message_images_in_order_and_text_stays_in_content():
    data = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here is a banana."},
                        {"inlineData": {"mimeType": "image/png", "data": PNG}},
                        {"text": " And a second one:"},
                        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": USAGE,
    }
    message = to_openai_response(data, "gemini-2.5-flash")["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "Here is a banana. And a second one:",
        "refusal": None,
        "images": [image_entry(PNG_URL), image_entry("data:image/jpeg;base64,/9j/4AAQ")],
    }


def test_an_answer_with_only_images_has_empty_content_and_no_images_key_without_images():
    only_image = {"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]}, "finishReason": "STOP"}
    choice = to_openai_response({"candidates": [only_image]}, "gemini-2.5-flash")["choices"][0]
    assert (choice["message"]["content"], choice["message"]["images"], choice["finish_reason"]) == (
        "",
        [image_entry(PNG_URL)],
        "stop",
    )
    text = to_openai_response({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}, "m")
    assert "images" not in text["choices"][0]["message"]


def test_thought_images_and_inline_data_that_is_not_an_image_are_dropped():
    parts = [
        {"inlineData": {"mimeType": "image/png", "data": "draft"}, "thought": True},
        {"inlineData": {"mimeType": "audio/L16;codec=pcm;rate=24000", "data": "AAAA"}},
        {"inlineData": {"mimeType": "image/webp", "data": "UklG"}},
    ]
    message = to_openai_response({"candidates": [{"content": {"parts": parts}}]}, "m")["choices"][0]["message"]
    assert message["images"] == [image_entry("data:image/webp;base64,UklG")]
    assert message["content"] == ""


def test_an_image_parts_thought_signature_rides_in_its_entry_as_googles_extra_content():
    """Gemini 3 image models sign their images and refuse an edit that replays one unsigned:
    the entry keeps the signature where Google's OpenAI endpoint carries signatures."""
    parts = [
        {"text": "A cat.", "thoughtSignature": "dGV4dC1zaWc="},
        {"inlineData": {"mimeType": "image/png", "data": PNG}, "thoughtSignature": "aW1hZ2Utc2ln"},
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
    ]
    message = to_openai_response({"candidates": [{"content": {"parts": parts}}]}, "m")["choices"][0]["message"]
    assert message["images"] == [
        {**image_entry(PNG_URL), "extra_content": {"google": {"thought_signature": "aW1hZ2Utc2ln"}}},
        image_entry("data:image/png;base64,AAAA"),
    ]


GROUNDED_TEXT = "Le café ☕ ouvre à 8 h. 東京 a 14 millions d'habitants."


def test_grounding_supports_and_citations_become_url_citations_counted_in_characters(openai_schemas):
    """Gemini's segments are UTF-8 byte offsets into their part (here part 1: a thought comes
    first); OpenAI's annotations count characters of `content`, which joins the visible parts."""
    from aiproxy.testing.fake_gemini import citation_metadata, grounding_metadata

    second = " Source: Wikipédia."
    grounding = grounding_metadata(
        GROUNDED_TEXT,
        ("Le café ☕ ouvre à 8 h.", "https://vertexaisearch.example/r/1", "cafe.fr"),
        ("東京 a 14 millions d'habitants.", "https://vertexaisearch.example/r/2", "wikipedia.org"),
        ("東京 a 14 millions d'habitants.", "https://vertexaisearch.example/r/3", "metro.tokyo.jp"),
        part_index=1,
    )
    text = GROUNDED_TEXT + second
    citations = citation_metadata(text, ("Wikipédia", "https://github.com/x/y", "mit"), ("Le café", "https://a.example", None))
    data = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [
                    {"text": "thinking…", "thought": True}, {"text": GROUNDED_TEXT}, {"text": second}]},
                "finishReason": "STOP",
                "groundingMetadata": grounding,
                "citationMetadata": citations,
            }
        ],
        "usageMetadata": USAGE,
    }
    body = to_openai_response(data, "gemini-2.5-flash")
    openai_schemas.validate("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message["content"] == text
    spans = [
        (a["url_citation"]["url"], a["url_citation"]["title"], message["content"][a["url_citation"]["start_index"]:a["url_citation"]["end_index"]])
        for a in message["annotations"]
    ]
    assert spans == [
        ("https://vertexaisearch.example/r/1", "cafe.fr", "Le café ☕ ouvre à 8 h."),
        ("https://vertexaisearch.example/r/2", "wikipedia.org", "東京 a 14 millions d'habitants."),
        ("https://vertexaisearch.example/r/3", "metro.tokyo.jp", "東京 a 14 millions d'habitants."),
        ("https://github.com/x/y", "", "Wikipédia"),
        ("https://a.example", "", "Le café"),
    ]
    assert message["annotations"][0] == {
        "type": "url_citation",
        "url_citation": {"url": "https://vertexaisearch.example/r/1", "title": "cafe.fr", "start_index": 0, "end_index": 22},
    }
    assert message["annotations"][3]["url_citation"]["license"] == "mit"


def test_citations_without_uri_or_outside_the_text_are_left_out_and_no_metadata_means_no_key():
    data = {
        "candidates": [
            {
                "content": {"parts": [{"text": "short"}]},
                "finishReason": "STOP",
                "citationMetadata": {"citationSources": [{"startIndex": 1, "endIndex": 3}, {"endIndex": 99, "uri": "https://x"}]},
                "groundingMetadata": {"groundingChunks": [{"web": {"uri": "https://y"}}],
                                      "groundingSupports": [{"segment": {"endIndex": 5}, "groundingChunkIndices": [0, 7]}]},
            }
        ],
    }
    message = to_openai_response(data, "m")["choices"][0]["message"]
    assert message["annotations"] == [
        {"type": "url_citation", "url_citation": {"url": "https://y", "title": "", "start_index": 0, "end_index": 5}}
    ]
    plain = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}
    assert "annotations" not in to_openai_response(plain, "m")["choices"][0]["message"]


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "OTHER", "MISSING_THOUGHT_SIGNATURE"])
def test_a_failed_candidate_with_nothing_generated_explains_itself_instead_of_an_empty_stop(reason, openai_schemas):
    """`stop` with "" reads as an answer that is empty on purpose; Gemini's finishMessage says why
    there is none (a malformed call, here), so it goes into content like a blocked prompt's reason."""
    message = "Malformed function call: print(default_api.get_weather(city='Oslo')"
    data = {"candidates": [{"content": {}, "finishReason": reason, "index": 0, "finishMessage": message}]}
    body = to_openai_response(data, "gemini-2.5-flash")
    openai_schemas.validate("CreateChatCompletionResponse", body)
    assert (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]) == (
        f"Gemini stopped without an answer (finishReason: {reason}): {message}",
        "stop",
    )
    no_message = {"candidates": [{"finishReason": reason}]}
    assert to_openai_response(no_message, "m")["choices"][0]["message"]["content"] == (
        f"Gemini stopped without an answer (finishReason: {reason})."
    )
    partial = {"candidates": [{"content": {"parts": [{"text": "Let me"}]}, "finishReason": reason}]}
    assert to_openai_response(partial, "m")["choices"][0]["message"]["content"] == "Let me"


def test_audio_prompt_tokens_are_reported_as_openais_audio_tokens():
    """Gemini bills audio input above text; its promptTokensDetails name the AUDIO share, which
    OpenAI's usage has a field for (and the text-only usage keeps its shape)."""
    metadata = {
        "promptTokenCount": 40,
        "candidatesTokenCount": 3,
        "totalTokenCount": 43,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}, {"modality": "AUDIO", "tokenCount": 32}],
    }
    assert usage(metadata)["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 32}
    assert usage({**metadata, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 40}]})[
        "prompt_tokens_details"] == {"cached_tokens": 0}


def test_a_token_whose_logprob_is_minus_infinity_gets_openais_very_unlikely_value(openai_schemas):
    """proto3 JSON writes a float's -inf as the string "-Infinity"; OpenAI's schema wants a number,
    and OpenAI itself gives -9999.0 to tokens too unlikely to count."""
    data = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP", "logprobsResult": {
        "chosenCandidates": [{"token": "Hi", "logProbability": "-Infinity"}],
        "topCandidates": [{"candidates": [{"token": "Hi", "logProbability": "-Infinity"},
                                          {"token": "Yo", "logProbability": "NaN"}, {"token": "x"}]}]}}]}
    body = to_openai_response(data, "m")
    openai_schemas.validate("CreateChatCompletionResponse", body)
    token = body["choices"][0]["logprobs"]["content"][0]
    assert token["logprob"] == -9999.0
    assert [top["logprob"] for top in token["top_logprobs"]] == [-9999.0, -9999.0, 0.0]
