"""Gemini SSE events -> OpenAI chat.completion.chunk sequence (wire-formats.md §4.5)."""

import pytest

from aiproxy.errors import UpstreamStreamTruncated
from aiproxy.providers.gemini_ids import decode_tool_call_id
from aiproxy.providers.gemini_response import StreamTranslator


def event(parts=None, finish=None, index=0, usage=None, candidates=None):
    cands = (
        candidates
        if candidates is not None
        else [
            {
                "content": {"role": "model", "parts": parts or []},
                "index": index,
                **({"finishReason": finish} if finish else {}),
            }
        ]
    )
    body = {"candidates": cands, "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    if usage:
        body["usageMetadata"] = usage
    return body


def run(events, include_usage=False):
    translator = StreamTranslator("gemini-2.5-flash", include_usage)
    chunks = [chunk for e in events for chunk in translator.feed(e)]
    return chunks + translator.finish()


def shape(chunks):
    """(choice index, delta, finish_reason) per chunk, or ('usage', usage) for the usage chunk."""
    out = []
    for chunk in chunks:
        if not chunk["choices"]:
            out.append(("usage", chunk["usage"]))
        for choice in chunk["choices"]:
            out.append((choice["index"], choice["delta"], choice["finish_reason"]))
    return out


RUNNING = [
    {"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 10, "totalTokenCount": 16},
    {"promptTokenCount": 4, "candidatesTokenCount": 5, "thoughtsTokenCount": 10, "totalTokenCount": 19},
]


def test_text_stream_with_usage_reports_running_totals_once():
    chunks = run(
        [event([{"text": "Hel"}], usage=RUNNING[0]), event([{"text": "lo"}], "STOP", usage=RUNNING[1])],
        include_usage=True,
    )
    assert shape(chunks) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Hel"}, None),
        (0, {"content": "lo"}, None),
        (0, {}, "stop"),
        (
            "usage",
            {
                "prompt_tokens": 4,
                "completion_tokens": 15,
                "total_tokens": 19,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 10},
            },
        ),
    ]
    assert [c["usage"] for c in chunks[:-1]] == [None] * 4
    first = chunks[0]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (first["id"], first["created"], "gemini-2.5-flash", "chat.completion.chunk")
    }
    assert first["id"].startswith("chatcmpl-")
    assert all(c["choices"][0]["logprobs"] is None for c in chunks[:-1])


def test_without_include_usage_there_is_no_usage_anywhere():
    chunks = run([event([{"text": "Hi"}], "STOP", usage=RUNNING[0])])
    assert shape(chunks) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Hi"}, None),
        (0, {}, "stop"),
    ]
    assert all("usage" not in c for c in chunks)


def test_tool_calls_stream_whole_with_stable_indexes_and_finish_as_tool_calls():
    chunks = run(
        [
            event([{"text": "Checking."}]),
            event(
                [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "SIG",
                    }
                ]
            ),
            event([{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}], "STOP"),
        ]
    )
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls == [
        {
            "index": 0,
            "id": calls[0]["id"],
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "index": 1,
            "id": calls[1]["id"],
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
        },
    ]
    assert calls[0]["id"] != calls[1]["id"]
    assert decode_tool_call_id(calls[0]["id"]) == ("SIG", None)
    assert shape(chunks)[-1] == (0, {}, "tool_calls")
    assert [s[2] for s in shape(chunks)].count("tool_calls") == 1


def test_empty_text_parts_and_thoughts_produce_no_delta():
    chunks = run(
        [
            event([{"text": "", "thoughtSignature": "x"}, {"text": "hmm", "thought": True}]),
            event([{"text": "ok"}], "MAX_TOKENS"),
        ]
    )
    assert shape(chunks) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "ok"}, None),
        (0, {}, "length"),
    ]


def test_n_greater_than_one_keeps_per_choice_state():
    chunks = run(
        [
            event(
                candidates=[
                    {"content": {"parts": [{"text": "A"}]}, "index": 0},
                    {"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "index": 1},
                ]
            ),
            event(
                candidates=[
                    {"content": {"parts": [{"text": "B"}]}, "index": 0, "finishReason": "STOP"},
                    {
                        "content": {"parts": [{"functionCall": {"name": "g", "args": {}}}]},
                        "index": 1,
                        "finishReason": "STOP",
                    },
                ]
            ),
        ]
    )
    got = shape(chunks)
    assert [(i, d.get("content"), [t["index"] for t in d.get("tool_calls", [])], f) for i, d, f in got] == [
        (0, "", [], None),
        (0, "A", [], None),
        (1, "", [], None),
        (1, None, [0], None),
        (0, "B", [], None),
        (0, None, [], "stop"),
        (1, None, [1], None),
        (1, None, [], "tool_calls"),
    ]


def test_blocked_prompt_streams_an_explanation_and_content_filter():
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
    }
    chunks = run([blocked], include_usage=True)
    assert shape(chunks) == [
        (0, {"role": "assistant", "content": ""}, None),
        (
            0,
            {
                "content": "Gemini blocked this prompt and generated no answer (blockReason: PROHIBITED_CONTENT)."
            },
            None,
        ),
        (0, {}, "content_filter"),
        (
            "usage",
            {
                "prompt_tokens": 3,
                "completion_tokens": 0,
                "total_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        ),
    ]


def test_safety_stop_mid_answer():
    chunks = run([event([{"text": "Here is how"}]), event([], "SAFETY")])
    assert shape(chunks)[-1] == (0, {}, "content_filter")


def test_events_after_the_finish_are_ignored():
    chunks = run([event([{"text": "done"}], "STOP"), event([{"text": "late"}], "STOP")])
    assert shape(chunks) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "done"}, None),
        (0, {}, "stop"),
    ]


@pytest.mark.parametrize("events", [[], [event([{"text": "cut"}])]], ids=["no-events", "no-finish-reason"])
def test_a_stream_that_ends_before_a_finish_reason_is_an_error(events):
    translator = StreamTranslator("m", include_usage=True)
    for e in events:
        translator.feed(e)
    with pytest.raises(UpstreamStreamTruncated, match="ended before the answer was finished"):
        translator.finish()


def test_streams_started_in_the_same_second_get_different_ids(monkeypatch):
    """Seed §11.14: a stream's chunk id came from the clock, so two streams in the same second
    shared it. Every chunk of a stream keeps one id; two streams never do."""
    monkeypatch.setattr("aiproxy.providers.gemini_response.time.time", lambda: 1_757_505_600.25)
    events = [event([{"text": "Hi"}], "STOP")]
    first, second = run(events), run(events)
    assert {c["created"] for c in first + second} == {1_757_505_600}
    assert len({c["id"] for c in first}) == len({c["id"] for c in second}) == 1
    assert first[0]["id"] != second[0]["id"]


def test_images_stream_as_delta_images_in_the_chunk_where_the_part_arrives():
    image = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}}
    chunks = run(
        [
            event([{"text": "Here it is:"}]),
            event([image, {"text": "thinking", "thought": True}]),
            event([{"text": " Enjoy."}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}}], "STOP"),
        ]
    )
    assert shape(chunks) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Here it is:"}, None),
        (0, {"images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]}, None),
        (
            0,
            {
                "content": " Enjoy.",
                "images": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}],
            },
            None,
        ),
        (0, {}, "stop"),
    ]


def test_a_streamed_images_thought_signature_rides_in_its_delta_entry():
    signed = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}, "thoughtSignature": "c2ln"}
    chunks = run([event([{"text": "A cat."}]), event([signed], "STOP")])
    assert shape(chunks)[2] == (
        0,
        {
            "images": [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0K"},
                    "extra_content": {"google": {"thought_signature": "c2ln"}},
                }
            ]
        },
        None,
    )


def test_grounding_in_the_last_event_becomes_annotations_over_the_whole_streamed_text(openai_schemas):
    """A stream's grounding metadata comes with a later event and counts bytes of the whole text:
    the annotations delta precedes the finish chunk, its indexes in characters of the content;
    metadata Gemini repeats in a later event is not sent twice."""
    from aiproxy.testing.fake_gemini import grounding_metadata

    pieces = ["Le café ☕ ouvre", " à 8 h. 東京 a 14 millions", " d'habitants."]
    text = "".join(pieces)
    grounding = grounding_metadata(
        text,
        ("Le café ☕ ouvre à 8 h.", "https://r.example/1", "cafe.fr"),
        ("東京 a 14 millions d'habitants.", "https://r.example/2", "wikipedia.org"),
    )
    last = event([{"text": pieces[2]}])
    last["candidates"][0]["groundingMetadata"] = grounding
    repeated = event([], "STOP")
    repeated["candidates"][0]["groundingMetadata"] = grounding
    chunks = run([event([{"text": pieces[0]}]), event([{"text": pieces[1]}]), last, repeated], include_usage=True)
    for chunk in chunks:
        openai_schemas.validate("CreateChatCompletionStreamResponse", chunk)
    deltas = shape(chunks)
    assert [d[1].get("content") for d in deltas[1:4]] == pieces
    assert deltas[4][1:] == ({}, "stop")
    cited = deltas[3][1]["annotations"]
    assert [(a["url_citation"]["url"], text[a["url_citation"]["start_index"]:a["url_citation"]["end_index"]]) for a in cited] == [
        ("https://r.example/1", "Le café ☕ ouvre à 8 h."),
        ("https://r.example/2", "東京 a 14 millions d'habitants."),
    ]


def test_a_failed_candidate_with_nothing_streamed_explains_itself_before_its_finish():
    failed = event([], "MALFORMED_FUNCTION_CALL")
    failed["candidates"][0]["finishMessage"] = "Malformed function call: get_weather{city:Oslo"
    assert shape(run([failed])) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Gemini stopped without an answer (finishReason: MALFORMED_FUNCTION_CALL): "
                        "Malformed function call: get_weather{city:Oslo"}, None),
        (0, {}, "stop"),
    ]
    assert shape(run([event([{"text": "Let me"}]), event([], "OTHER")]))[1:] == [
        (0, {"content": "Let me"}, None),
        (0, {}, "stop"),
    ]


def test_a_streamed_segment_without_its_text_is_read_in_the_whole_text():
    """The last event's own text would also hold these bytes; a stream's segments count every event's."""
    grounding = {"groundingChunks": [{"web": {"uri": "https://r.example/1", "title": "r"}}],
                 "groundingSupports": [{"segment": {"startIndex": 6, "endIndex": 12}, "groundingChunkIndices": [0]}]}
    last = event([{"text": "éééééééé"}], "STOP")
    last["candidates"][0]["groundingMetadata"] = grounding
    chunks = shape(run([event([{"text": "Café ☕ ouvre."}]), last]))
    (cited,) = chunks[2][1]["annotations"]
    assert ("Café ☕ ouvre.éééééééé"[cited["url_citation"]["start_index"]:cited["url_citation"]["end_index"]]) == "☕ ou"


def test_a_stream_with_prompt_feedback_and_no_candidates_ends_as_the_json_answer_does():
    """Without a blockReason, an answer with no candidates is a content_filter answer that explains
    itself as JSON; streamed, it was a 502 "ended before the answer was finished"."""
    event = {"promptFeedback": {"safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]},
             "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}}
    chunks = run([event], include_usage=True)
    assert [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks[:-1]] == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Gemini blocked this prompt and generated no answer (blockReason: BLOCK_REASON_UNSPECIFIED)."
                     " Flagged: HARM_CATEGORY_HARASSMENT (HIGH)."}, None),
        ({}, "content_filter"),
    ]
    assert chunks[-1]["usage"]["prompt_tokens"] == 3
