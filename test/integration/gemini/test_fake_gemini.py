"""The fake Gemini server behaves like the real v1beta API where the gateway could notice
(wire-formats.md §4.8), checked with a plain HTTP client."""

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from aiproxy.testing.fake_gemini import (
    DEFAULT_KEY,
    REQUEST_MESSAGES,
    FakeGemini,
    image_part,
    image_response,
    text_stream,
)

pytestmark = pytest.mark.anyio
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
HI = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
PROTOS = (
    Path(__file__).resolve().parents[3].parent
    / "shared/specs/gemini-v1beta-protos/google/ai/generativelanguage/v1beta"
)


@pytest.fixture
async def client(fake):
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-goog-api-key": DEFAULT_KEY}) as http:
        yield http


async def error_of(client, body, path=GENERATE, **kwargs):
    response = await client.post(path, json=body, **kwargs)
    return response.status_code, response.json()["error"]


async def test_unknown_fields_are_rejected_like_the_real_api(client):
    status, error = await error_of(client, {**HI, "top_k": 3})
    assert status == 400
    assert error == {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": 'Invalid JSON payload received. Unknown name "top_k": Cannot find field.',
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"description": 'Invalid JSON payload received. Unknown name "top_k": Cannot find field.'}
                ],
            }
        ],
    }
    _, nested = await error_of(client, {**HI, "generationConfig": {"maxTokens": 5}})
    assert (
        nested["message"]
        == "Invalid JSON payload received. Unknown name \"maxTokens\" at 'generation_config': Cannot find field."
    )
    _, deep = await error_of(client, {"contents": [{"role": "user", "parts": [{"text": "x", "name": "y"}]}]})
    assert deep["message"].endswith("at 'contents[0].parts[0]': Cannot find field.")


async def test_snake_case_and_camel_case_are_both_accepted(client, fake):
    body = {
        "system_instruction": {"parts": [{"text": "terse"}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generation_config": {"max_output_tokens": 5, "topP": 0.5},
    }
    response = await client.post(GENERATE, json=body)
    assert response.status_code == 200
    assert fake.last_json == body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified\n"),
        (
            {"contents": [{"role": "user", "parts": []}]},
            "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n",
        ),
        (
            {"contents": [{"role": "user", "parts": [{}]}]},
            "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field\n",
        ),
        (
            {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
            "Please use a valid role: user, model.",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {
                        "role": "model",
                        "parts": [
                            {"functionCall": {"name": "f", "args": {}}},
                            {"functionCall": {"name": "g", "args": {}}},
                        ],
                    },
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
                ]
            },
            "Please ensure that the number of function response parts is equal to the number of function call parts "
            "of the function call turn.",
        ),
        (
            {**HI, "generationConfig": {"responseJsonSchema": {"type": "object"}}},
            "response_mime_type must be application/json when response_json_schema is set.",
        ),
        (
            {**HI, "generationConfig": {"maxOutputTokens": 2**40}},
            "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 1099511627776",
        ),
        (
            {**HI, "generationConfig": {"temperature": "warm"}},
            "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"warm\"",
        ),
        (
            {**HI, "generationConfig": {"thinkingConfig": {"includeThoughts": 1}}},
            "Invalid value at 'generation_config.thinking_config.include_thoughts' (TYPE_BOOL), 1",
        ),
        (
            {**HI, "generationConfig": {"stopSequences": ["ok", 5]}},
            "Invalid value at 'generation_config.stop_sequences' (TYPE_STRING), [\"ok\",5]",
        ),
        (
            {**HI, "generationConfig": {"responseModalities": ["TEXT", "image"]}},
            "Invalid value at 'generation_config.response_modalities[1]' (type.googleapis.com/"
            "google.ai.generativelanguage.v1beta.GenerationConfig.Modality), \"image\"",
        ),
        # Was: the fake's own 500 (a TypeError decoding the list), where the real API names the field.
        (
            {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "audio/wav", "data": [[]]}}]}]},
            "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), [[]]",
        ),
        (
            {"contents": [{"role": "user", "parts": [{"text": 7}]}]},
            "Invalid value at 'contents[0].parts[0].text' (TYPE_STRING), 7",
        ),
    ],
    ids=["no-contents", "empty-parts", "no-data", "bad-role", "response-count", "schema-without-mime",
         "int32-out-of-range", "float-not-a-number", "bool-not-a-bool", "stop-not-strings",
         "modality-not-an-enum-name", "bytes-not-a-string", "string-not-a-string"],
)
async def test_requests_the_real_api_refuses(client, body, message):
    status, error = await error_of(client, body)
    assert (status, error["status"], error["message"]) == (400, "INVALID_ARGUMENT", message)


async def test_key_checks(fake):
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        missing = await http.post(GENERATE, json=HI)
        wrong = await http.post(GENERATE, json=HI, headers={"x-goog-api-key": "nope"})
        query = await http.post(GENERATE, json=HI, params={"key": DEFAULT_KEY})
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (wrong.status_code, wrong.json()["error"]["details"][0]["reason"]) == (400, "API_KEY_INVALID")
    assert query.status_code == 200


async def test_sse_framing_has_crlf_separators_running_usage_and_no_done(client, fake):
    fake.enqueue(text_stream(["a", "b", "c"]))
    response = await client.post(STREAM, params={"alt": "sse"}, json=HI)
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert raw.endswith(b"\r\n\r\n") and b"[DONE]" not in raw and not raw.startswith(b":")
    events = [orjson.loads(block[len(b"data: ") :]) for block in raw.split(b"\r\n\r\n") if block]
    assert [e["usageMetadata"]["candidatesTokenCount"] for e in events] == [1, 2, 3]
    assert ["finishReason" in e["candidates"][0] for e in events] == [False, False, True]


async def test_stream_without_alt_sse_is_a_json_array(client, fake):
    fake.enqueue(text_stream(["a", "b"]))
    response = await client.post(STREAM, json=HI)
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in response.json()] == ["a", "b"]


async def test_image_answers_carry_camel_case_inline_data_like_gemini_2_5_flash_image(client, fake):
    fake.enqueue(image_response(image_part(b"\x89PNG-bytes"), text="Here you go."))
    body = {**HI, "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}
    answer = (await client.post(GENERATE, json=body)).json()
    assert answer["candidates"][0]["content"]["parts"] == [
        {"text": "Here you go."},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORy1ieXRlcw=="}},
    ]
    assert answer["usageMetadata"]["candidatesTokensDetails"] == [{"modality": "IMAGE", "tokenCount": 1290}]


async def test_with_required_signatures_a_replayed_image_needs_the_one_issued_like_gemini_3_image_models():
    async with FakeGemini(require_thought_signatures=True) as fake:
        async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-goog-api-key": DEFAULT_KEY}) as client:
            fake.enqueue(image_response(image_part(b"cat", thought_signature="Y2F0LXNpZw==")))
            signed = (await client.post(GENERATE, json=HI)).json()["candidates"][0]["content"]["parts"][0]
            assert signed["thoughtSignature"] == "Y2F0LXNpZw=="

            def edit(image):
                model = {"role": "model", "parts": [{"text": "A cat."}, image]}
                return {"contents": [*HI["contents"], model, {"role": "user", "parts": [{"text": "Blue"}]}]}

            unsigned = {"inlineData": signed["inlineData"]}
            status, error = await error_of(client, edit(unsigned))
            assert (status, error["message"]) == (
                400,
                "Image part is missing a thought_signature in content position 2, part position 2. Please refer "
                "to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
            )
            for image in (signed, {**unsigned, "thoughtSignature": "skip_thought_signature_validator"}):
                assert (await client.post(GENERATE, json=edit(image))).status_code == 200
            assert fake.last_json["contents"][1]["parts"][1] == image  # what it received, for assertions


@pytest.mark.parametrize("count", [2, "2", 2.0], ids=["int", "string", "float"])
async def test_the_echo_answers_with_candidate_count_candidates(client, count):
    """proto3 JSON takes an int32 as "2" or 2.0 too: the fake answered those with its own 500."""
    body = {**HI, "generation_config": {"candidate_count": count}}
    answer = (await client.post(GENERATE, json=body)).json()
    assert [(c["index"], c["content"]["parts"]) for c in answer["candidates"]] == [
        (0, [{"text": "echo: Hi"}]),
        (1, [{"text": "echo: Hi"}]),
    ]
    stream = await client.post(STREAM, params={"alt": "sse"}, json=body)
    events = [orjson.loads(line[6:]) for line in stream.text.split("\r\n\r\n") if line]
    assert all([c["index"] for c in event["candidates"]] == [0, 1] for event in events)
    assert [c.get("finishReason") for c in events[-1]["candidates"]] == ["STOP", "STOP"]


async def test_unknown_path_is_a_404(client):
    response = await client.post("/v1beta/models/x:embedContent", json=HI)
    assert response.status_code == 404


def test_runs_from_a_thread_for_sync_code():
    with FakeGemini() as fake:
        response = httpx.post(fake.base_url + GENERATE, json=HI, headers={"x-goog-api-key": DEFAULT_KEY})
    assert response.json()["candidates"][0]["content"]["parts"] == [{"text": "echo: Hi"}]
    assert fake.requests[0].path == GENERATE


def test_runs_as_a_process():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiproxy.testing.fake_gemini",
            "--port",
            "0",
            "--api-key",
            "k",
            "--latency-ms",
            "50",
            "--stream-chunks",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        started = time.perf_counter()
        response = httpx.post(
            base_url + STREAM, params={"alt": "sse"}, json=HI, headers={"x-goog-api-key": "k"}
        )
        assert time.perf_counter() - started >= 0.05
        assert response.content.count(b"data: ") == 20
    finally:
        process.terminate()
        process.wait(10)


def proto_fields() -> dict[str, set[str]]:
    """message name -> its field names, from the v1beta .proto files (nested messages flattened)."""
    fields: dict[str, set[str]] = {}
    for proto in ("content.proto", "generative_service.proto", "safety.proto", "citation.proto"):
        stack: list[str | None] = []
        for line in (PROTOS / proto).read_text().splitlines():
            line = line.split("//")[0].strip()
            match = re.match(r"(message|enum|oneof)\s+(\w+)\s*\{", line)
            field = re.match(r"(?:optional\s+|repeated\s+)?[\w.<>, ]+?\s+(\w+)\s*=\s*\d+", line)
            if field and not match and stack and stack[-1]:
                fields.setdefault(stack[-1], set()).add(field.group(1))
            for position in range(line.count("{")):
                if match and position == 0:
                    kind, name = match.groups()
                    stack.append(name if kind == "message" else (stack[-1] if kind == "oneof" else None))
                else:
                    stack.append(None)  # service, rpc and option blocks
            for _ in range(line.count("}")):
                stack.pop()
    return fields


@pytest.mark.skipif(not PROTOS.is_dir(), reason="shared/specs protos not available")
def test_the_fake_knows_exactly_the_proto_fields():
    protos = proto_fields()
    for message, fields in REQUEST_MESSAGES.items():
        snake = {re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), f) for f in fields}
        assert snake == protos[message], message


@pytest.mark.skipif(not PROTOS.is_dir(), reason="shared/specs protos not available")
def test_the_fakes_citation_metadata_uses_the_proto_fields():
    from aiproxy.testing.fake_gemini import citation_metadata, grounding_metadata

    protos = proto_fields()

    def check(value: dict, message: str) -> None:
        snake = {re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), key) for key in value}
        assert snake <= protos[message], message

    text = "Né à Paris, mort à 東京."
    grounding = grounding_metadata(text, ("mort à 東京", "https://r.example/1", "t"), part_index=1)
    check(grounding, "GroundingMetadata")
    check(grounding["searchEntryPoint"], "SearchEntryPoint")
    for chunk in grounding["groundingChunks"]:
        check(chunk, "GroundingChunk")
        check(chunk["web"], "Web")
    for support in grounding["groundingSupports"]:
        check(support, "GroundingSupport")
        check(support["segment"], "Segment")
    segment = grounding["groundingSupports"][0]["segment"]
    assert text.encode()[segment["startIndex"]:segment["endIndex"]].decode() == segment["text"] == "mort à 東京"
    citations = citation_metadata(text, ("Né à Paris", "https://github.com/x/y", "mit"))
    check(citations, "CitationMetadata")
    (source,) = citations["citationSources"]
    check(source, "CitationSource")
    assert source == {"endIndex": len("Né à Paris".encode()), "uri": "https://github.com/x/y", "license": "mit"}
