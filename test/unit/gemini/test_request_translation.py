"""OpenAI chat request -> Gemini GenerateContentRequest: the exact upstream body for each rule
of wire-formats.md §4.1 and each request-side edge case of §4.7."""

import pytest

from aiproxy.errors import InvalidRequest
from aiproxy.providers.gemini_ids import SKIP_SIGNATURE, new_tool_call_id
from aiproxy.providers.gemini_translate import gemini_model_id, to_gemini_request

USER_HI = {"role": "user", "content": "Hi"}


def translate(**body):
    return to_gemini_request({"model": "gemini-2.5-flash", **body})


def test_plain_user_message():
    assert translate(messages=[USER_HI]) == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_system_and_developer_messages_all_go_to_system_instruction_in_order():
    messages = [
        {"role": "system", "content": "Be terse."},
        USER_HI,
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "assistant", "content": "Salut"},
        {"role": "system", "content": "Never use emoji."},
        {"role": "user", "content": "Again"},
    ]
    assert translate(messages=messages) == {
        "systemInstruction": {
            "parts": [{"text": "Be terse."}, {"text": "Answer in French."}, {"text": "Never use emoji."}]
        },
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Salut"}]},
            {"role": "user", "parts": [{"text": "Again"}]},
        ],
    }


def test_sampling_parameters_map_to_generation_config():
    body = translate(
        messages=[USER_HI],
        temperature=0.3,
        top_p=0.9,
        max_tokens=100,
        stop="END",
        n=2,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logprobs=True,
        top_logprobs=3,
        top_k=40,
    )
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseLogprobs": True,
        "logprobs": 3,
        "topK": 40,
    }


def test_max_completion_tokens_wins_and_stop_list_is_kept():
    body = translate(messages=[USER_HI], max_tokens=10, max_completion_tokens=20, stop=["a", "b"])
    assert body["generationConfig"] == {"maxOutputTokens": 20, "stopSequences": ["a", "b"]}


@pytest.mark.parametrize(
    ("seed", "sent"), [(2**31 - 1, 2**31 - 1), (-(2**31), -(2**31)), (2**40 + 5, 5), (-1 - 2**31, 2**31 - 1)]
)
def test_int64_seeds_fold_into_gemini_int32(seed, sent):
    assert translate(messages=[USER_HI], seed=seed)["generationConfig"] == {"seed": sent}


def test_unsupported_parameters_are_dropped_and_nulls_ignored():
    body = translate(
        messages=[USER_HI],
        user="u1",
        metadata={"k": "v"},
        store=True,
        service_tier="auto",
        logit_bias={},
        parallel_tool_calls=False,
        safety_identifier="s",
        prompt_cache_key="p",
        temperature=None,
        stream=False,
        stream_options={"include_usage": True},
        verbosity="low",
        prompt_cache_retention="24h",
        prompt_cache_options={"ttl": "30m"},
        moderation=None,
    )
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_moderation_is_a_400_naming_it():
    """OpenAI's moderation of input and output cannot run for Gemini: dropped, unmoderated text
    reached a client that believed it moderated."""
    with pytest.raises(InvalidRequest, match="moderation") as error:
        translate(messages=[USER_HI], moderation={"model": "omni-moderation-latest"})
    assert error.value.param == "moderation"


def test_logit_bias_is_a_400_naming_it():
    """Its keys are token ids of OpenAI's tokenizers: dropped, a banned token stayed allowed."""
    with pytest.raises(InvalidRequest, match="token ids") as error:
        translate(messages=[USER_HI], logit_bias={"50256": -100})
    assert error.value.param == "logit_bias"


@pytest.mark.parametrize(
    ("effort", "budget"), [("none", 0), ("minimal", 1024), ("low", 1024), ("medium", 8192), ("high", 24576)]
)
def test_reasoning_effort_maps_to_thinking_budget(effort, budget):
    body = translate(messages=[USER_HI], reasoning_effort=effort)
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": budget}}


def test_unknown_reasoning_effort_is_a_400():
    with pytest.raises(InvalidRequest) as error:
        translate(messages=[USER_HI], reasoning_effort="extreme")
    assert error.value.param == "reasoning_effort"


@pytest.mark.parametrize(
    ("reasoning", "budget"),
    [({"effort": "high"}, 24576), ({"effort": "low", "exclude": True}, 1024), ({"max_tokens": 2000}, 2000),
     ({"enabled": False, "effort": "high"}, 0), ({"enabled": True}, None), ({"exclude": True}, None)],
)
def test_openrouters_reasoning_object_maps_to_thinking_budget(reasoning, budget):
    """Was: OpenRouter's `reasoning` was dropped, so a client asking Gemini to think hard (or not at all) got its default."""
    body = translate(messages=[USER_HI], reasoning=reasoning)
    expected = {} if budget is None else {"thinkingConfig": {"thinkingBudget": budget}}
    assert body.get("generationConfig", {}) == expected


def test_reasoning_effort_wins_over_the_reasoning_object():
    body = translate(messages=[USER_HI], reasoning_effort="minimal", reasoning={"effort": "high"})
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 1024}}


@pytest.mark.parametrize(
    ("reasoning", "param"),
    [("high", "reasoning"), ({"effort": "extreme"}, "reasoning.effort"), ({"max_tokens": -1}, "reasoning.max_tokens"),
     ({"max_tokens": "2000"}, "reasoning.max_tokens")],
)
def test_a_reasoning_object_gemini_cannot_read_is_a_400(reasoning, param):
    with pytest.raises(InvalidRequest) as error:
        translate(messages=[USER_HI], reasoning=reasoning)
    assert error.value.param == param


@pytest.mark.parametrize(
    ("modalities", "sent"),
    [(["text", "image"], ["TEXT", "IMAGE"]), (["image"], ["IMAGE"]), (["text"], ["TEXT"]), (["image", "image"], ["IMAGE"])],
)
def test_modalities_map_to_response_modalities(modalities, sent):
    body = translate(messages=[USER_HI], modalities=modalities)
    assert body["generationConfig"] == {"responseModalities": sent}


def test_empty_modalities_send_nothing():
    assert "generationConfig" not in translate(messages=[USER_HI], modalities=[])


@pytest.mark.parametrize(
    ("modalities", "message"),
    [(["text", "audio"], "'audio' output is not supported"), (["text", "video"], "'video'"), (["TEXT"], "'TEXT'"),
     ([1], "1 is not"), ("image", "must be a list")],
    ids=["audio", "unknown", "upper-case", "not-a-string", "not-a-list"],
)
def test_unsupported_modalities_are_a_400_naming_modalities(modalities, message):
    with pytest.raises(InvalidRequest, match=message) as error:
        translate(messages=[USER_HI], modalities=modalities)
    assert error.value.param == "modalities"


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("response_format", "config"),
    [
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        (
            {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": SCHEMA}},
            {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA},
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "anything"}},
            {"responseMimeType": "application/json"},
        ),
        ({"type": "text"}, None),
    ],
)
def test_response_format(response_format, config):
    body = translate(messages=[USER_HI], response_format=response_format)
    assert body.get("generationConfig") == config


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json"}, {"type": "JSON_OBJECT"}, {}, "json_object", {"type": "json_schema", "json_schema": "city"}],
    ids=["unknown-type", "upper-case", "no-type", "not-an-object", "json_schema-not-an-object"],
)
def test_a_response_format_gemini_cannot_read_is_a_400_naming_it(response_format):
    """Dropped, it gave free text to a client that asked for a structured answer."""
    with pytest.raises(InvalidRequest) as error:
        translate(messages=[USER_HI], response_format=response_format)
    assert error.value.param == "response_format"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather by city",
        "parameters": SCHEMA,
        "strict": True,
    },
}


def test_tools_become_one_tool_with_function_declarations():
    no_params = {"type": "function", "function": {"name": "now"}}
    body = translate(messages=[USER_HI], tools=[WEATHER_TOOL, no_params])
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "get_weather", "description": "Weather by city", "parametersJsonSchema": SCHEMA},
                {"name": "now", "description": ""},
            ]
        }
    ]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [WEATHER_TOOL]}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [WEATHER_TOOL]}},
            {"mode": "VALIDATED", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(choice, config):
    body = translate(messages=[USER_HI], tools=[WEATHER_TOOL], tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize(
    "choice",
    [{"type": "allowed_tools", "allowed_tools": {"mode": "require", "tools": [WEATHER_TOOL]}},
     {"type": "allowed_tools", "allowed_tools": {"tools": [WEATHER_TOOL]}},
     {"type": "custom", "custom": {"name": "grammar"}}, "any",
     {"type": "allowed_tools", "allowed_tools": {"mode": ["auto"], "tools": [WEATHER_TOOL]}}],
    ids=["allowed-tools-typo", "allowed-tools-no-mode", "custom", "unknown-mode", "allowed-tools-mode-a-list"],
)
def test_a_tool_choice_gemini_cannot_read_is_a_400_naming_it(choice):
    """An allowed_tools mode other than auto/required used to become VALIDATED, which lets the model
    answer in text where the client may have meant to force a call."""
    with pytest.raises(InvalidRequest) as error:
        translate(messages=[USER_HI], tools=[WEATHER_TOOL], tool_choice=choice)
    assert error.value.param == "tool_choice"


def test_custom_tools_are_refused():
    with pytest.raises(InvalidRequest) as error:
        translate(messages=[USER_HI], tools=[{"type": "custom", "custom": {"name": "grammar"}}])
    assert error.value.param == "tools"


@pytest.mark.parametrize(
    "options",
    [{}, {"search_context_size": "high"},
     {"user_location": {"type": "approximate", "approximate": {"country": "FR", "city": "Paris"}}}],
    ids=["empty", "context-size", "user-location"],
)
def test_web_search_options_turn_on_google_search(options):
    body = translate(messages=[USER_HI], web_search_options=options)
    assert body["tools"] == [{"googleSearch": {}}]


def test_web_search_goes_next_to_the_function_tools():
    body = translate(messages=[USER_HI], tools=[WEATHER_TOOL], web_search_options={})
    assert [sorted(tool) for tool in body["tools"]] == [["functionDeclarations"], ["googleSearch"]]


def test_web_search_options_must_be_an_object():
    with pytest.raises(InvalidRequest) as error:
        translate(messages=[USER_HI], web_search_options=True)
    assert error.value.param == "web_search_options"


@pytest.mark.parametrize(
    ("param", "value"),
    [("functions", [{"name": "get_weather", "parameters": SCHEMA}]), ("function_call", "auto"),
     ("function_call", {"name": "get_weather"})],
)
def test_legacy_functions_are_a_400_naming_them(param, value):
    """Dropped, they left the model without the functions and the client waiting for a call."""
    with pytest.raises(InvalidRequest, match="tools") as error:
        translate(messages=[USER_HI], **{param: value})
    assert error.value.param == param


def test_empty_legacy_functions_are_ignored():
    plain = translate(messages=[USER_HI])
    assert translate(messages=[USER_HI], functions=[], function_call=None) == plain
    assert translate(messages=[USER_HI], function_call="none") == plain


# --- content parts ----------------------------------------------------------------------------------


def user_parts(*parts):
    return translate(messages=[{"role": "user", "content": list(parts)}])["contents"][0]["parts"]


def test_image_data_url_becomes_inline_data():
    parts = user_parts(
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
    )
    assert parts == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]


def test_data_url_mime_types_are_the_names_gemini_accepts():
    # OpenAI takes data:image/jpg and any case; Gemini answers 400 "Unsupported MIME type: image/jpg".
    parts = user_parts(
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "data:Image/PNG;base64,iVBORw0KGgo="}},
    )
    assert [part["inlineData"]["mimeType"] for part in parts] == ["image/jpeg", "image/png"]


def test_image_http_url_becomes_file_data_and_is_never_fetched():
    parts = user_parts(
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg?size=large"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
    )
    assert parts == [
        {"fileData": {"fileUri": "https://example.com/cat.jpg?size=large", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://example.com/render"}},
    ]


@pytest.mark.parametrize(
    "url",
    ["data:image/png,rawbytes", "data:image/png;base64", "file:///etc/passwd", "ftp://example.com/a.png", ""],
)
def test_bad_image_urls_are_a_400(url):
    with pytest.raises(InvalidRequest) as error:
        user_parts({"type": "image_url", "image_url": {"url": url}})
    assert error.value.http_status == 400
    assert error.value.param == "messages"


@pytest.mark.parametrize("audio", [{"data": "UklGRg==", "format": {"a": 1}}, {"data": "UklGRg==", "format": ["wav"]},
                                   {"data": 5, "format": "wav"}, {"data": ["UklGRg=="]}],
                         ids=["format-object", "format-list", "data-number", "data-list"])
def test_input_audio_that_is_not_text_is_a_400(audio):
    """Was sent on: a format object as the MIME type "audio/{'a': 1}", data of another type for Gemini to refuse."""
    with pytest.raises(InvalidRequest, match="input_audio") as error:
        user_parts({"type": "input_audio", "input_audio": audio})
    assert error.value.param == "messages"


def test_input_audio_and_pdf_file_become_inline_data():
    parts = user_parts(
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "file", "file": {"filename": "notes.txt", "file_data": "aGVsbG8="}},
    )
    assert parts == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8="}},
    ]


def test_file_url_becomes_file_data_and_is_never_fetched():
    # OpenRouter's file part takes "a base64 data URL or URL"; a URL is no base64 for inlineData.
    parts = user_parts(
        {"type": "file", "file": {"filename": "report.pdf", "file_data": "https://example.com/get?id=7"}},
        {"type": "file", "file": {"file_data": "http://example.com/notes.txt"}},
    )
    assert parts == [
        {"fileData": {"fileUri": "https://example.com/get?id=7", "mimeType": "application/pdf"}},
        {"fileData": {"fileUri": "http://example.com/notes.txt", "mimeType": "text/plain"}},
    ]


def test_url_schemes_are_read_in_any_case():
    """RFC 3986: a scheme is case-insensitive. Was: `HTTPS://` and `DATA:` images were 400s ("must be an
    http(s) or data: URL"), and such a file_data went to Gemini as base64 ("Base64 decoding failed")."""
    parts = user_parts(
        {"type": "image_url", "image_url": {"url": "HTTPS://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "Data:image/png;base64,iVBORw0KGgo="}},
        {"type": "file", "file": {"file_data": "Http://example.com/a.pdf"}},
        {"type": "file", "file": {"file_data": "DATA:application/pdf;base64,JVBERi0="}},
    )
    assert parts == [
        {"fileData": {"fileUri": "HTTPS://example.com/cat.png", "mimeType": "image/png"}},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "Http://example.com/a.pdf", "mimeType": "application/pdf"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize("url", ["ftp://example.com/a.pdf", "file:///etc/passwd", "gs://bucket/a.pdf"])
def test_a_file_url_of_another_scheme_is_a_400_as_an_image_one_is(url):
    """Was: sent to Gemini as if it were base64 text, which Gemini refused as "Base64 decoding failed"."""
    with pytest.raises(InvalidRequest, match="http") as error:
        user_parts({"type": "file", "file": {"file_data": url}})
    assert error.value.param == "messages"


@pytest.mark.parametrize("file_data", ["https://x.test/report", "JVBERi0x"], ids=["url", "bare-base64"])
@pytest.mark.parametrize("filename", [5, ["a.pdf"]], ids=["number", "list"])
def test_a_filename_that_is_not_a_string_is_a_400(file_data, filename):
    """Was a 500 (mimetypes read it as a path: TypeError) when the filename was to tell the type."""
    with pytest.raises(InvalidRequest, match="filename") as error:
        user_parts({"type": "file", "file": {"filename": filename, "file_data": file_data}})
    assert error.value.param == "messages"


def test_file_id_is_a_400():
    with pytest.raises(InvalidRequest, match="file_id"):
        user_parts({"type": "file", "file": {"file_id": "file-abc"}})


# --- §4.7 edge cases ----------------------------------------------------------------------------------


def test_consecutive_same_role_messages_are_merged():
    messages = [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five"},
    ]
    assert translate(messages=messages)["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "parts": [{"text": "five"}]},
    ]


def tool_call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_parallel_tool_results_become_one_user_turn_and_a_following_user_message_joins_it():
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                tool_call("call_a", "get_weather", '{"city":"Paris"}'),
                tool_call("call_b", "get_weather", '{"city":"Rome"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny, 18 degrees"},
        {"role": "user", "content": "Which is warmer?"},
    ]
    assert translate(messages=messages)["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SKIP_SIGNATURE,
                },
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [  # in the order of the calls: Gemini pairs them by position
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 18 degrees"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"text": "Which is warmer?"},
            ],
        },
    ]


def test_tool_results_sent_out_of_order_answer_the_calls_they_belong_to():
    # Gemini pairs functionResponse parts with the turn's functionCall parts by position (ids are
    # normally absent): results in completion order must not answer each other's calls.
    messages = [
        {"role": "user", "content": "Weather in Paris, Rome and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                tool_call(new_tool_call_id(gemini_id=f"g-{city}"), "get_weather", f'{{"city":"{city}"}}')
                for city in ("Paris", "Rome", "Oslo")
            ],
        },
    ]
    ids = [call["id"] for call in messages[1]["tool_calls"]]
    messages += [
        {"role": "tool", "tool_call_id": ids[2], "content": "Oslo: 3"},
        {"role": "tool", "tool_call_id": ids[0], "content": "Paris: 18"},
        {"role": "tool", "tool_call_id": ids[1], "content": "Rome: 21"},
    ]
    answers = translate(messages=messages)["contents"][2]["parts"]
    assert [part["functionResponse"] for part in answers] == [
        {"name": "get_weather", "response": {"result": f"{city}: {temp}"}, "id": f"g-{city}"}
        for city, temp in (("Paris", 18), ("Rome", 21), ("Oslo", 3))
    ]


def test_thought_signature_and_gemini_call_id_survive_the_round_trip_through_the_tool_call_id():
    signed = new_tool_call_id("CikBcsjaSIG+/==", "gemini-call-7")
    plain = new_tool_call_id()
    messages = [
        USER_HI,
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [tool_call(signed, "lookup", '{"q":1}'), tool_call(plain, "lookup", "")],
        },
        {"role": "tool", "tool_call_id": signed, "content": [{"type": "text", "text": "42"}]},
        {"role": "tool", "tool_call_id": plain, "content": "43"},
    ]
    assert translate(messages=messages)["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Let me check."},
                {
                    "functionCall": {"name": "lookup", "args": {"q": 1}, "id": "gemini-call-7"},
                    "thoughtSignature": "CikBcsjaSIG+/==",
                },
                {"functionCall": {"name": "lookup", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "lookup", "response": {"result": "42"}, "id": "gemini-call-7"}},
                {"functionResponse": {"name": "lookup", "response": {"result": "43"}}},
            ],
        },
    ]


def image_entry(url):
    """One `message.images` entry as the gateway (and OpenRouter) returns generated images."""
    return {"type": "image_url", "image_url": {"url": url}}


def test_assistant_images_go_back_into_the_model_turn_after_its_text_and_before_its_calls():
    messages = [
        {"role": "user", "content": "Draw a cat"},
        {
            "role": "assistant",
            "content": "Here it is.",
            "images": [image_entry("data:image/png;base64,iVBORw0KGgo="), image_entry("https://cdn.example/cat.webp")],
            "tool_calls": [tool_call("call_x", "save", "{}")],
        },
        {"role": "tool", "tool_call_id": "call_x", "content": "saved"},
        {"role": "user", "content": "Now make the cat blue"},
    ]
    model_turn = translate(messages=messages)["contents"][1]
    assert model_turn["role"] == "model"
    assert [next(iter(part)) for part in model_turn["parts"]] == ["text", "inlineData", "fileData", "functionCall"]
    assert model_turn["parts"][1]["inlineData"] == {"mimeType": "image/png", "data": "iVBORw0KGgo="}
    assert model_turn["parts"][2]["fileData"] == {"fileUri": "https://cdn.example/cat.webp", "mimeType": "image/webp"}


def test_image_signatures_come_back_from_the_entry_and_unsigned_images_get_the_bypass_value():
    signed = {**image_entry("data:image/png;base64,AAAA"), "extra_content": {"google": {"thought_signature": "c2ln"}}}
    messages = [
        USER_HI,
        {"role": "assistant", "content": "Two cats.", "images": [signed, image_entry("data:image/png;base64,BBBB")]},
        {"role": "user", "content": "Make them blue"},
    ]
    assert translate(messages=messages)["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Two cats."},
            {"inlineData": {"mimeType": "image/png", "data": "AAAA"}, "thoughtSignature": "c2ln"},
            {"inlineData": {"mimeType": "image/png", "data": "BBBB"}, "thoughtSignature": SKIP_SIGNATURE},
        ],
    }


def test_an_assistant_message_with_only_images_is_a_model_turn():
    messages = [
        USER_HI,
        {"role": "assistant", "content": "", "images": [image_entry("data:image/jpeg;base64,/9j/")]},
        {"role": "user", "content": "Bluer"},
    ]
    assert translate(messages=messages)["contents"][1]["parts"][0]["inlineData"] == {
        "mimeType": "image/jpeg",
        "data": "/9j/",
    }


@pytest.mark.parametrize(
    ("images", "param"),
    [
        ("data:image/png;base64,AAAA", "messages[1].images"),
        ([{"image_url": {"url": "data:image/png;base64,AAAA"}}], "messages[1].images[0]"),
        ([image_entry("data:image/png;base64,AAAA"), "data:image/png;base64,AAAA"], "messages[1].images[1]"),
        ([{"type": "image_url"}], "messages[1].images[0]"),
        ([image_entry("data:image/png,raw")], "messages[1].images[0]"),
        ([image_entry("file:///etc/passwd")], "messages[1].images[0]"),
        ([{**image_entry("data:image/png;base64,AAAA"), "extra_content": {"google": {"thought_signature": 7}}}],
         "messages[1].images[0]"),
    ],
    ids=["not-a-list", "no-type", "bare-string", "no-url", "not-base64", "file-scheme", "signature-not-str"],
)
def test_malformed_assistant_images_are_a_400_naming_the_entry(images, param):
    messages = [USER_HI, {"role": "assistant", "content": "ok", "images": images}]
    with pytest.raises(InvalidRequest) as error:
        translate(messages=messages)
    body = error.value.to_body()["error"]
    assert (error.value.http_status, body["type"], body["param"]) == (400, "invalid_request_error", param)
    assert param in body["message"]


def test_unknown_tool_call_id_is_a_400_naming_it():
    messages = [USER_HI, {"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}]
    with pytest.raises(InvalidRequest, match="call_nowhere") as error:
        translate(messages=messages)
    assert error.value.param == "messages"
    assert error.value.to_body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_tool_call_arguments_must_be_a_json_object(arguments):
    messages = [USER_HI, {"role": "assistant", "tool_calls": [tool_call("call_x", "f", arguments)]}]
    with pytest.raises(InvalidRequest, match="arguments of 'f'"):
        translate(messages=messages)


def test_empty_text_parts_and_empty_messages_are_dropped():
    messages = [
        {"role": "system", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "again"},
    ]
    assert translate(messages=messages) == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}, {"text": "again"}]}]
    }


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "You are helpful."}],
        [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
        [],
    ],
    ids=["system-only", "all-empty", "no-messages"],
)
def test_nothing_left_to_send_is_a_400(messages):
    with pytest.raises(InvalidRequest) as error:
        translate(messages=messages)
    assert error.value.to_body() == {
        "error": {
            "message": error.value.message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
    }


def test_unknown_role_is_a_400():
    with pytest.raises(InvalidRequest, match="'function'"):
        translate(messages=[{"role": "function", "name": "f", "content": "x"}])


def test_model_prefix_is_stripped():
    assert gemini_model_id("models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert gemini_model_id("gemini-2.5-flash") == "gemini-2.5-flash"


ASSISTANT_CALL = {"role": "assistant", "content": None,
                  "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": 5}, "tools"),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": 5}}}, "tool_choice"),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"tools": [{"function": "f"}]}}}, "tool_choice"),
        ({"tool_choice": {"type": "allowed_tools",
                          "allowed_tools": {"tools": [{"type": "function", "function": {"description": "x"}}]}}},
         "tool_choice"),
        ({"stop": 5}, "stop"),
        ({"stop": ["ok", 5]}, "stop"),
        ({"reasoning_effort": ["low"]}, "reasoning_effort"),
        ({"messages": [USER_HI, {**ASSISTANT_CALL, "tool_calls": 5}]}, "messages"),
        ({"messages": [USER_HI, {**ASSISTANT_CALL, "tool_calls": [{**ASSISTANT_CALL["tool_calls"][0], "id": 123}]}]},
         "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": {"x": 1}}}]}]}, "messages"),
    ],
    ids=["tools-not-list", "allowed-tools-not-list", "allowed-tool-function-str", "allowed-tool-no-name",
         "stop-int", "stop-list-with-int", "effort-list", "tool-calls-not-list", "tool-call-id-int", "file-data-object"],
)
def test_mistyped_fields_are_a_400_naming_the_param(body, param):
    """Not a TypeError deep in the translation (which the client would see as a 500)."""
    with pytest.raises(InvalidRequest) as error:
        translate(**{"messages": [USER_HI], **body})
    assert error.value.param == param


@pytest.mark.parametrize("text", [5, ["a"], {"t": "a"}], ids=["number", "list", "object"])
@pytest.mark.parametrize("role", ["system", "user", "tool"])
def test_a_text_part_whose_text_is_not_a_string_is_a_400(role, text):
    """Was a 500 in a tool result (joining its texts: TypeError), and sent to Gemini as a part's text
    (which it refuses) elsewhere."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [USER_HI, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": role, "tool_call_id": "call_1", "content": [{"type": "text", "text": text}]}]
    with pytest.raises(InvalidRequest, match="'text' must be a string") as error:
        translate(messages=messages)
    assert error.value.param == "messages"
