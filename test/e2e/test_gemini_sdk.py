"""The official openai SDK against the real gateway process with a `gemini:` mapping, served by the
fake Gemini v1beta server (which, like Gemini 3, insists on thought signatures). Every response the
SDK receives is checked against OpenAI's schemas by the `captured` fixture (test/conftest.py)."""

from __future__ import annotations

import base64
import json

import grpc
import httpx
import openai
import pydantic
import pytest

from aiproxy.testing.fake_gemini import (
    FakeGemini,
    StreamReply,
    blocked_prompt,
    candidate,
    citation_metadata,
    function_call_response,
    grounding_metadata,
    image_part,
    image_response,
    rate_limited,
    response,
    text_response,
    text_stream,
    usage_metadata,
)
from aiproxy.testing.gateway import CLIENT_KEY, UPSTREAM_KEYS, GatewayProcess
from aiproxy.testing.recording import RecordingTransport
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

MODEL = "gemini-test"  # mapped to gemini:gemini-2.5-flash by the gateway fixture's defaults
UPSTREAM_MODEL = "gemini-2.5-flash"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
GRPC_AUTH = (("authorization", f"Bearer {CLIENT_KEY}"),)
SIGNATURE = base64.b64encode(b"opaque-gemini-3-thought-signature").decode()


@pytest.fixture(scope="module")
def gemini_server():
    with FakeGemini(UPSTREAM_KEYS["GEMINI_API_KEY"], require_thought_signatures=True) as server:
        yield server


@pytest.fixture(scope="module")
def gemini_gateway(gemini_server, tmp_path_factory):
    with GatewayProcess(
        tmp_path_factory.mktemp("gemini-gateway"), gemini_url=gemini_server.base_url
    ) as gateway:
        yield gateway


@pytest.fixture()
def fake(gemini_server):
    gemini_server.reset()
    yield gemini_server
    gemini_server.reset()


@pytest.fixture()
def client(gemini_gateway, captured):
    http_client = httpx.Client(transport=RecordingTransport(captured))
    with openai.OpenAI(
        base_url=gemini_gateway.base_url,
        api_key=CLIENT_KEY,
        max_retries=0,
        timeout=20,
        http_client=http_client,
    ) as sdk:
        yield sdk


def user(text):
    return {"role": "user", "content": text}


def test_plain_chat_is_logged_like_any_other(client, fake, gemini_gateway):
    fake.enqueue(text_response("Bonjour!", usage=usage_metadata(5, 2, thoughts=7, cached=3)))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Answer in French."}, user("Hello")],
        max_tokens=50,
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "Bonjour!"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == UPSTREAM_MODEL
    assert reply.system_fingerprint == "fp_gemini_de40daba"  # the seed's prefix; 8 hex digits of SHA-256(model)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (5, 9, 14)
    assert reply.usage.completion_tokens_details.reasoning_tokens == 7
    assert reply.usage.prompt_tokens_details.cached_tokens == 3
    sent = fake.requests[0]
    assert sent.path == f"/v1beta/models/{UPSTREAM_MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEYS["GEMINI_API_KEY"]
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "systemInstruction": {"parts": [{"text": "Answer in French."}]},
        "generationConfig": {"maxOutputTokens": 50},
    }
    record = gemini_gateway.wait_for_record(raw.headers["x-request-id"])
    assert (record["provider"], record["model_original"], record["finish_reason"]) == (
        "gemini",
        MODEL,
        "stop",
    )
    assert record["usage"]["total_tokens"] == 14
    assert record["response"]["choices"][0]["message"]["content"] == "Bonjour!"


def test_streamed_chat_is_logged_assembled(client, fake, gemini_gateway):
    fake.enqueue(text_stream(["The capital", " is", " Paris."], prompt_tokens=6))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[user("Capital of France?")],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The capital is Paris."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 6
    assert len({c.id for c in chunks}) == 1
    assert {c.system_fingerprint for c in chunks} == {"fp_gemini_de40daba"}
    assert fake.requests[0].query == {"alt": "sse"}
    record = gemini_gateway.wait_for_record(raw.headers["x-request-id"])
    assert (record["stream"], record["finish_reason"], record["usage"]["prompt_tokens"]) == (True, "stop", 6)
    assert record["response"]["choices"][0]["message"]["content"] == "The capital is Paris."


def test_stream_usage_is_logged_even_when_the_client_did_not_ask(client, fake, gemini_gateway):
    fake.enqueue(text_stream(["Short", " answer."], prompt_tokens=4))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[user("Anything")], stream=True
    )
    chunks = list(raw.parse())
    assert all(c.choices and c.usage is None for c in chunks)  # nothing the client did not ask for
    record = gemini_gateway.wait_for_record(raw.headers["x-request-id"])
    assert record["usage"]["prompt_tokens"] == 4


def test_streamed_tool_call_round_trip(client, fake):
    fake.enqueue(
        StreamReply(
            [
                response([candidate([{"text": "Let me check."}], finish=None)]),
                function_call_response(
                    ("get_weather", {"city": "Paris"}),
                    ("get_weather", {"city": "Rome"}),
                    thought_signature=SIGNATURE,
                ),
            ]
        ),
        text_stream(["Paris: 24°C, Rome: 19°C."]),
    )
    messages = [user("Weather in Paris and Rome?")]
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL], stream=True)
    )
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(
                delta.index,
                {
                    "id": delta.id,
                    "type": "function",
                    "function": {"name": delta.function.name, "arguments": ""},
                },
            )
            call["function"]["arguments"] += delta.function.arguments or ""
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    messages += [
        {"role": "assistant", "content": "Let me check.", "tool_calls": [calls[0], calls[1]]},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": '{"celsius": 19}'},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"celsius": 24}'},
    ]
    final = list(
        client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in final) == "Paris: 24°C, Rome: 19°C."
    assert fake.requests[1].json["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Let me check."},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SIGNATURE,
                },
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [  # in call order (Paris, Rome), though the client sent Rome's result first
                {"functionResponse": {"name": "get_weather", "response": {"celsius": 24}}},
                {"functionResponse": {"name": "get_weather", "response": {"celsius": 19}}},
            ],
        },
    ]


class City(pydantic.BaseModel):
    name: str
    population_millions: float


def test_json_schema_output(client, fake):
    fake.enqueue(text_response('{"name": "Paris", "population_millions": 2.1}'))
    parsed = client.chat.completions.parse(
        model=MODEL, messages=[user("Biggest French city?")], response_format=City
    )
    assert parsed.choices[0].message.parsed == City(name="Paris", population_millions=2.1)
    config = fake.requests[0].json["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["properties"] == {
        "name": {"title": "Name", "type": "string"},
        "population_millions": {"title": "Population Millions", "type": "number"},
    }


def test_image(client, fake):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-image-bytes").decode()
    fake.enqueue(text_response("A tiny test image."))
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{png}", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/photo.jpg"}},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content == "A tiny test image."
    assert fake.requests[0].json["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": png}},
                {"fileData": {"fileUri": "https://example.com/photo.jpg", "mimeType": "image/jpeg"}},
            ],
        }
    ]


def test_safety_block(client, fake):
    fake.enqueue(blocked_prompt("SAFETY"), blocked_prompt("PROHIBITED_CONTENT"))
    reply = client.chat.completions.create(model=MODEL, messages=[user("something harmful")])
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content.startswith(
        "Gemini blocked this prompt and generated no answer (blockReason: SAFETY)"
    )
    chunks = list(client.chat.completions.create(model=MODEL, messages=[user("again")], stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "PROHIBITED_CONTENT" in "".join(c.choices[0].delta.content or "" for c in chunks)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_rate_limit(client, fake, stream):
    fake.enqueue(rate_limited("13s"))
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model=MODEL, messages=[user("x")], stream=stream)
    assert error.value.status_code == 429
    assert error.value.response.headers["retry-after"] == "13"
    assert error.value.body["code"] == "rate_limit_exceeded"
    assert error.value.body["message"].startswith("You exceeded your current quota")


def test_rejected_gemini_key_is_a_502_for_the_operator_not_a_401(client, fake):
    key = fake.api_key
    fake.api_key = "a-key-the-gateway-does-not-have"
    try:
        with pytest.raises(openai.InternalServerError) as error:
            client.chat.completions.create(model=MODEL, messages=[user("x")])
    finally:
        fake.api_key = key
    assert error.value.status_code == 502
    assert error.value.body["code"] == "upstream_auth_failed"
    assert "GEMINI_API_KEY" in error.value.body["message"]


def test_a_stream_cut_mid_way_ends_with_an_error_event(client, fake):
    cut = text_stream(["partial ", "answer"])
    cut.events[-1]["candidates"][0].pop("finishReason")
    cut.cut = True
    fake.enqueue(cut)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model=MODEL, messages=[user("x")], stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "partial answer"


def test_models_list_shows_the_gemini_alias(client):
    assert client.models.retrieve(MODEL).owned_by == "gemini"
    assert MODEL in {m.id for m in client.models.list().data}


@pytest.fixture()
def grpc_stub(gemini_gateway):
    with grpc.insecure_channel(gemini_gateway.grpc_target) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


def test_grpc_behaves_the_same(grpc_stub, fake):
    fake.enqueue(
        function_call_response(("get_weather", {"city": "Oslo"}), thought_signature=SIGNATURE),
        rate_limited("4s"),
    )
    request = chat_pb2.ChatCompletionRequest(model=MODEL, stream=True)
    request.messages.add(role="user", content_text="Weather in Oslo?")
    request.tools.add(
        type="function",
        function=chat_pb2.FunctionDefinition(
            name="get_weather", parameters_json=json.dumps(WEATHER_TOOL["function"]["parameters"])
        ),
    )
    chunks = list(grpc_stub.StreamChatCompletion(request, metadata=GRPC_AUTH))
    call = next(tc for c in chunks for tc in c.choices[0].delta.tool_calls)
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
    assert call.id.startswith("call_")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with pytest.raises(grpc.RpcError) as error:
        grpc_stub.CreateChatCompletion(
            chat_pb2.ChatCompletionRequest(model=MODEL, messages=request.messages), metadata=GRPC_AUTH
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(error.value.trailing_metadata())["retry-after"] == "4"


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def image_url_of(entry) -> bytes:
    """The bytes behind one OpenRouter-style image entry {"type": "image_url", "image_url": {"url": data URL}}."""
    assert entry["type"] == "image_url"
    header, _, data = entry["image_url"]["url"].partition(",")
    assert header == "data:image/png;base64"
    return base64.b64decode(data)


def test_generated_images_arrive_in_message_images(client, fake, gemini_gateway):
    fake.enqueue(image_response(image_part(PNG_BYTES), text="A banana, as asked."))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[user("Draw a banana")], modalities=["text", "image"]
    )
    message = raw.parse().choices[0].message
    assert message.content == "A banana, as asked."
    assert [image_url_of(entry) for entry in message.model_extra["images"]] == [PNG_BYTES]
    assert fake.requests[0].json["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"]}
    record = gemini_gateway.wait_for_record(raw.headers["x-request-id"])
    assert [image_url_of(e) for e in record["response"]["choices"][0]["message"]["images"]] == [PNG_BYTES]


def test_streamed_images_arrive_in_delta_images_and_the_log_keeps_them(client, fake, gemini_gateway):
    fake.enqueue(
        StreamReply(
            [
                response([candidate([{"text": "Two bananas:"}], finish=None)]),
                response([candidate([image_part(PNG_BYTES)], finish=None)]),
                response([candidate([image_part(PNG_BYTES[::-1][:64] + b"2")])]),
            ]
        )
    )
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[user("Draw two bananas")], modalities=["image", "text"], stream=True
    )
    chunks = list(raw.parse())
    images = [entry for c in chunks if c.choices for entry in (c.choices[0].delta.model_extra or {}).get("images", [])]
    assert [len(image_url_of(entry)) for entry in images] == [len(PNG_BYTES), 65]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Two bananas:"
    record = gemini_gateway.wait_for_record(raw.headers["x-request-id"])
    logged = record["response"]["choices"][0]["message"]
    assert logged["content"] == "Two bananas:"
    assert [image_url_of(entry) for entry in logged["images"]] == [image_url_of(entry) for entry in images]


IMAGE_SIGNATURE = base64.b64encode(b"opaque-gemini-3-image-signature").decode()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_multi_turn_image_editing_sends_the_image_and_its_signature_back(client, fake, stream):
    """"Now make the cat blue": the assistant message goes back with the images the SDK received,
    and Gemini (here the fake, strict like Gemini 3 image models) gets them in the model turn."""
    first = image_response(image_part(PNG_BYTES, thought_signature=IMAGE_SIGNATURE), text="A cat.")
    fake.enqueue(StreamReply([first]) if stream else first, image_response(image_part(PNG_BYTES[::-1])))
    messages = [user("Draw a cat")]
    answer = client.chat.completions.create(model=MODEL, messages=messages, modalities=["text", "image"], stream=stream)
    if stream:
        deltas = [c.choices[0].delta.model_extra or {} for c in answer if c.choices]
        images = [entry for delta in deltas for entry in delta.get("images", [])]
    else:
        images = answer.choices[0].message.model_extra["images"]
    assert [image_url_of(entry) for entry in images] == [PNG_BYTES]
    messages += [{"role": "assistant", "content": "A cat.", "images": images}, user("Now make the cat blue")]
    edited = client.chat.completions.create(model=MODEL, messages=messages, modalities=["text", "image"])
    assert [image_url_of(entry) for entry in edited.choices[0].message.model_extra["images"]] == [PNG_BYTES[::-1]]
    assert fake.requests[1].json["contents"] == [
        {"role": "user", "parts": [{"text": "Draw a cat"}]},
        {
            "role": "model",
            "parts": [
                {"text": "A cat."},
                {
                    "inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG_BYTES).decode()},
                    "thoughtSignature": IMAGE_SIGNATURE,
                },
            ],
        },
        {"role": "user", "parts": [{"text": "Now make the cat blue"}]},
    ]


def test_a_malformed_assistant_image_is_a_400_naming_it(client, fake):
    messages = [
        user("Draw a cat"),
        {"role": "assistant", "content": "A cat.", "images": [{"type": "image_url", "image_url": {}}]},
        user("Bluer"),
    ]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert (error.value.body["type"], error.value.body["param"]) == ("invalid_request_error", "messages[1].images[0]")
    assert fake.requests == []


def test_audio_output_is_refused_naming_modalities(client, fake):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[user("Say hi")], modalities=["text", "audio"])
    assert (error.value.body["type"], error.value.body["param"]) == ("invalid_request_error", "modalities")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("param", "value"), [("logit_bias", {"9891": 100}), ("moderation", {"model": "omni-moderation-latest"})]
)
def test_output_controls_gemini_lacks_are_refused_naming_them(client, fake, param, value):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[user("Yes or no?")], extra_body={param: value})
    assert (error.value.body["type"], error.value.body["param"]) == ("invalid_request_error", param)
    assert fake.requests == []


def test_an_unknown_response_format_is_refused_naming_it(client, fake):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[user("A city?")], response_format={"type": "json"})
    assert (error.value.body["type"], error.value.body["param"]) == ("invalid_request_error", "response_format")
    assert fake.requests == []


def test_an_allowed_tools_mode_gemini_cannot_read_is_refused(client, fake):
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "require", "tools": [WEATHER_TOOL]}}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[user("Weather?")], tools=[WEATHER_TOOL], tool_choice=choice)
    assert (error.value.body["type"], error.value.body["param"]) == ("invalid_request_error", "tool_choice")
    assert fake.requests == []


def test_legacy_functions_are_refused_naming_them(client, fake):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[user("Weather?")], functions=[WEATHER_TOOL["function"]])
    assert (error.value.body["type"], error.value.body["param"]) == ("invalid_request_error", "functions")
    assert fake.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_grpc_delivers_images_in_extra_json(grpc_stub, fake, stream):
    fake.enqueue(image_response(image_part(PNG_BYTES)))
    request = chat_pb2.ChatCompletionRequest(
        model=MODEL, stream=stream, extra_json=json.dumps({"modalities": ["image"]})
    )
    request.messages.add(role="user", content_text="Draw a banana")
    if stream:
        chunks = list(grpc_stub.StreamChatCompletion(request, metadata=GRPC_AUTH))
        extras = [json.loads(c.choices[0].delta.extra_json) for c in chunks if c.choices and c.choices[0].delta.extra_json]
        images = [entry for extra in extras for entry in extra.get("images", [])]
    else:
        reply = grpc_stub.CreateChatCompletion(request, metadata=GRPC_AUTH)
        images = json.loads(reply.choices[0].message.extra_json)["images"]
    assert [image_url_of(entry) for entry in images] == [PNG_BYTES]
    assert fake.requests[0].json["generationConfig"] == {"responseModalities": ["IMAGE"]}


def test_grpc_sends_an_assistants_images_back_through_extra_json(grpc_stub, fake):
    fake.enqueue(image_response(image_part(PNG_BYTES, thought_signature=IMAGE_SIGNATURE)), text_response("Blue now."))
    request = chat_pb2.ChatCompletionRequest(model=MODEL, extra_json=json.dumps({"modalities": ["image"]}))
    request.messages.add(role="user", content_text="Draw a cat")
    reply = grpc_stub.CreateChatCompletion(request, metadata=GRPC_AUTH)
    request.messages.add(role="assistant", content_text="", extra_json=reply.choices[0].message.extra_json)
    request.messages.add(role="user", content_text="Now make it blue")
    assert grpc_stub.CreateChatCompletion(request, metadata=GRPC_AUTH).choices[0].message.content_text == "Blue now."
    assert fake.requests[1].json["contents"][1] == {
        "role": "model",
        "parts": [
            {
                "inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG_BYTES).decode()},
                "thoughtSignature": IMAGE_SIGNATURE,
            }
        ],
    }


GROUNDED = "Le café ☕ ouvre à 8 h. 東京 a 14 millions d'habitants."
SUPPORTS = (
    ("Le café ☕ ouvre à 8 h.", "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AbC1", "cafe.fr"),
    ("東京 a 14 millions d'habitants.", "https://vertexaisearch.cloud.google.com/grounding-api-redirect/XyZ2", "wikipedia.org"),
)
EXPECTED_CITATIONS = [(url, title, passage) for passage, url, title in SUPPORTS] + [
    ("https://github.com/example/cafe", "", "14 millions")
]


def grounded_candidate(parts, text, finish="STOP"):
    body = candidate(parts, finish)
    body["groundingMetadata"] = grounding_metadata(text, *SUPPORTS)
    body["citationMetadata"] = citation_metadata(text, ("14 millions", "https://github.com/example/cafe", "mit"))
    return body


def cited(content, annotations):
    return [(a["url_citation"]["url"], a["url_citation"]["title"],
             content[a["url_citation"]["start_index"]:a["url_citation"]["end_index"]]) for a in annotations]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_grounding_and_citations_arrive_as_url_citation_annotations(client, fake, gemini_gateway, stream):
    """Gemini's byte offsets become character offsets of the content (the French and Japanese text
    makes the two differ), in the message, in stream deltas and in the request log; and the answer
    goes back as history without complaint."""
    if stream:
        events = [response([candidate([{"text": GROUNDED[:12]}], None)]),
                  response([grounded_candidate([{"text": GROUNDED[12:]}], GROUNDED)])]
        fake.enqueue(StreamReply(events), text_response("De rien."))
    else:
        fake.enqueue(response([grounded_candidate([{"text": GROUNDED}], GROUNDED)]), text_response("De rien."))
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[user("Café?")], stream=stream)
    if stream:
        chunks = list(raw.parse())
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        annotations = [a for c in chunks for a in (c.choices[0].delta.model_extra or {}).get("annotations", [])]
        message = {"role": "assistant", "content": content, "annotations": annotations}
    else:
        reply = raw.parse().choices[0].message
        content, annotations = reply.content, [a.model_dump() for a in reply.annotations]
        message = reply.model_dump(exclude_none=True)
    assert content == GROUNDED
    assert cited(content, annotations) == EXPECTED_CITATIONS
    logged = gemini_gateway.wait_for_record(raw.headers["x-request-id"])["response"]["choices"][0]["message"]
    assert cited(logged["content"], logged["annotations"]) == EXPECTED_CITATIONS
    again = client.chat.completions.create(model=MODEL, messages=[user("Café?"), message, user("Merci")])
    assert again.choices[0].message.content == "De rien."


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_web_search_options_ground_the_answer_with_google_search(client, fake, stream):
    """OpenAI's web search for chat turns on Gemini's googleSearch tool, whose grounding comes back
    as url_citation annotations; before, the option was dropped and the answer was not grounded."""
    grounded = response([grounded_candidate([{"text": GROUNDED}], GROUNDED)])
    fake.enqueue(StreamReply([grounded]) if stream else grounded)
    location = {"type": "approximate", "approximate": {"country": "FR", "city": "Paris"}}
    reply = client.chat.completions.create(
        model=MODEL, messages=[user("Café?")], tools=[WEATHER_TOOL], stream=stream,
        web_search_options={"search_context_size": "low", "user_location": location},
    )
    if stream:
        annotations = [a for c in reply for a in (c.choices[0].delta.model_extra or {}).get("annotations", [])]
    else:
        annotations = [a.model_dump() for a in reply.choices[0].message.annotations]
    assert cited(GROUNDED, annotations) == EXPECTED_CITATIONS
    assert fake.requests[0].json["tools"] == [
        {"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
                                   "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"]}]},
        {"googleSearch": {}},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_grpc_delivers_annotations(grpc_stub, fake, stream):
    fake.enqueue(response([grounded_candidate([{"text": GROUNDED}], GROUNDED)]))
    request = chat_pb2.ChatCompletionRequest(model=MODEL, stream=stream)
    request.messages.add(role="user", content_text="Café?")
    if stream:
        chunks = list(grpc_stub.StreamChatCompletion(request, metadata=GRPC_AUTH))
        messages = [c.choices[0].delta for c in chunks if c.choices]
    else:
        messages = [grpc_stub.CreateChatCompletion(request, metadata=GRPC_AUTH).choices[0].message]
    annotations = [a for m in messages for a in annotations_of(m)]
    assert cited(GROUNDED, annotations) == EXPECTED_CITATIONS


def annotations_of(message) -> list[dict]:
    return json.loads(message.extra_json or "{}").get("annotations", [])


PARIS, ROME = ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})


def _calls_apart() -> list[dict]:
    """Two calls in two stream events, the first signed and unfinished."""
    first = function_call_response(PARIS, thought_signature=SIGNATURE)
    del first["candidates"][0]["finishReason"]
    return [first, function_call_response(ROME)]


@pytest.mark.parametrize("reply", ["json", "sse-together", "sse-apart"])
def test_parallel_tool_calls_false_gets_only_the_first_call(client, fake, gemini_gateway, reply):
    """Gemini has no switch for parallel calls and may call several functions at once: the client
    that asked for at most one gets the first, as it receives it in the log, and can answer it."""
    stream = reply != "json"
    together = function_call_response(PARIS, ROME, thought_signature=SIGNATURE)
    fake.enqueue(StreamReply(_calls_apart() if reply == "sse-apart" else [together]) if stream else together)
    fake.enqueue(text_response("Paris: 24°C."))
    messages = [user("Weather in Paris and Rome?")]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], parallel_tool_calls=False, stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    if stream:
        chunks = list(raw.parse())
        deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
        assert [(d.index, d.function.name, json.loads(d.function.arguments)) for d in deltas] == [(0, *PARIS)]
        calls = [{"id": deltas[0].id, "type": "function", "function": deltas[0].function.model_dump()}]
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        answer = raw.parse()
        calls = [call.model_dump() for call in answer.choices[0].message.tool_calls]
        reasons, usage = [answer.choices[0].finish_reason], answer.usage
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [PARIS]
    assert reasons == ["tool_calls"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (20, 5 if reply == "sse-apart" else 10)
    record = gemini_gateway.wait_for_record(raw.headers["x-request-id"])
    logged = record["response"]["choices"][0]
    assert [call["function"]["name"] for call in logged["message"]["tool_calls"]] == ["get_weather"]
    assert json.loads(logged["message"]["tool_calls"][0]["function"]["arguments"]) == PARIS[1]
    assert logged["finish_reason"] == "tool_calls"
    # The history the client can build from what it got is one Gemini accepts (signed, one answer).
    messages += [
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"celsius": 24}'},
    ]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "Paris: 24°C."


def test_an_assistant_answer_given_only_as_openai_audio_is_a_400_naming_it(client, fake):
    """An OpenAI audio answer goes back as `audio: {id}` with no content; Gemini cannot read OpenAI's
    audio store, and dropped, the answer vanished from the history the model saw."""
    messages = [
        user("Say hi"),
        {"role": "assistant", "content": None, "audio": {"id": "audio_abc123"}},
        user("Again, slower"),
    ]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert (error.value.body["type"], error.value.body["param"]) == ("invalid_request_error", "messages[1].audio")
    assert "content" in error.value.body["message"]
    assert fake.requests == []
    # With its transcript in content the answer is there: the audio id adds nothing Gemini needs.
    fake.enqueue(text_response("Hi."))
    messages[1]["content"] = "Hi!"
    assert client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content == "Hi."
    assert fake.requests[0].json["contents"][1] == {"role": "model", "parts": [{"text": "Hi!"}]}



@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_generated_image_tokens_are_reported_apart(client, fake, gemini_gateway, stream):
    """Gemini bills image output far above text; its candidatesTokensDetails name the IMAGE share,
    which goes where OpenRouter reports it: completion_tokens_details.image_tokens."""
    answer = image_response(image_part(PNG_BYTES), text="A banana.")
    fake.enqueue(StreamReply([answer]) if stream else answer)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[user("Draw a banana")], modalities=["text", "image"], stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    usage = list(raw.parse())[-1].usage if stream else raw.parse().usage
    assert usage.completion_tokens == 1292
    assert usage.completion_tokens_details.model_extra["image_tokens"] == 1290
    record = gemini_gateway.wait_for_record(raw.headers["x-request-id"])
    assert record["usage"]["completion_tokens_details"]["image_tokens"] == 1290
