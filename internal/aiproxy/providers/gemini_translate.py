"""OpenAI Chat Completions -> Gemini v1beta `GenerateContentRequest`: pure dict work, no I/O.

The choices behind each rule are written down in docs/gemini.md; the tables follow
wire-formats.md §4.1. Anything Gemini cannot honour is dropped (Gemini rejects unknown
fields with 400) unless dropping it would mislead the client (_REFUSED), and a request Gemini
would reject for a reason we can name is refused here with an OpenAI 400 instead of a less
helpful upstream message.
"""

from __future__ import annotations

import mimetypes
import re

import orjson
from loguru import logger

from aiproxy.errors import InvalidRequest
from aiproxy.providers.gemini_ids import SKIP_SIGNATURE, decode_tool_call_id

# Where a tool call was made: (message position, index in its tool_calls), in request order.
_CallPlace = tuple[int, int]

# OpenAI parameter -> generationConfig field, copied as they are.
_GENERATION_FIELDS = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",  # not OpenAI, but sent by clients written for OpenRouter; Gemini has it
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "logprobs": "responseLogprobs",
    "top_logprobs": "logprobs",
}
# Fields this module reads itself, or the response side (stream_options, parallel_tool_calls); every
# other key of the body is dropped with a debug log.
_HANDLED = frozenset(
    {"model", "messages", "stream", "stream_options", "parallel_tool_calls", "max_tokens", "max_completion_tokens"}
    | {"stop"}
    | {"response_format", "tools", "tool_choice", "reasoning_effort", "reasoning", "modalities", "web_search_options"}
    | _GENERATION_FIELDS.keys()
)
# Parameters Gemini cannot honour and whose silent loss would mislead the client: refused with a
# 400 naming them (docs/gemini.md). The legacy functions would need `message.function_call`
# answers; dropped, the model never saw them and the client waited for a call. logit_bias keys are
# token ids of OpenAI's tokenizers, meaningless to Gemini; dropped, a banned token stayed allowed.
# moderation asks OpenAI to moderate input and output; dropped, unmoderated text passed as moderated.
_REFUSED = {
    "functions": "is deprecated and not supported for Gemini models; use 'tools' and 'tool_choice'.",
    "function_call": "is deprecated and not supported for Gemini models; use 'tools' and 'tool_choice'.",
    "logit_bias": "is not supported for Gemini models: its keys are token ids of OpenAI's tokenizers.",
    "moderation": "is not supported for Gemini models: OpenAI's moderation cannot run on their input and output.",
}
# reasoning_effort -> thinkingBudget, the budgets Google's own OpenAI endpoint uses (wire-formats §3.7).
_THINKING_BUDGET = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}
# OpenAI/OpenRouter output modalities -> responseModalities. `audio` is refused (docs/gemini.md):
# Gemini's audio output comes from separate TTS models as raw PCM, not as OpenAI's message.audio.
_MODALITIES = {"text": "TEXT", "image": "IMAGE"}
_TOOL_CHOICE_MODE = {"none": "NONE", "auto": "AUTO", "required": "ANY"}
# AUTO may not name functions; VALIDATED is "auto" limited to allowedFunctionNames.
_ALLOWED_TOOLS_MODE = {"auto": "VALIDATED", "required": "ANY"}
_AUDIO_MIME = {"mp3": "audio/mp3", "wav": "audio/wav"}
# Names clients put in data: URLs that OpenAI accepts and Gemini refuses ("Unsupported MIME type").
_MIME_ALIASES = {"image/jpg": "image/jpeg"}
_FETCHABLE = frozenset({"http", "https"})  # URL schemes Gemini fetches itself (fileData)
# A URL's scheme (RFC 3986 section 3.1), bounded: the text may be megabytes of base64.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value)


def _list_of(value, param: str) -> list:
    """value when it is a list (or absent: []), else a 400 naming param."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be a list here.", param=param)
    return value


def gemini_model_id(model: str) -> str:
    """The id that goes into the URL path: `models/` is optional on the way in."""
    return model[7:] if model.startswith("models/") else model


def to_gemini_request(body: dict) -> dict:
    """The Gemini request body for an OpenAI chat request (the model goes into the URL)."""
    _refuse_unhonourable(body)
    system_parts, contents = _contents(body.get("messages"))
    request: dict = {"contents": contents}
    if system_parts:
        request["systemInstruction"] = {"parts": system_parts}
    tools = _tools(body)
    if tools:
        request["tools"] = tools
    tool_config = _tool_config(body.get("tool_choice"))
    if tool_config is not None:
        request["toolConfig"] = tool_config
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    dropped = [key for key, value in body.items() if key not in _HANDLED and value is not None]
    if dropped:
        logger.debug("gemini: dropping parameters Gemini cannot honour: {}", ", ".join(sorted(dropped)))
    return request


# --- messages ------------------------------------------------------------------------------------


def _contents(messages) -> tuple[list[dict], list[dict]]:
    """systemInstruction parts and the merged user/model turns."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    system: list[dict] = []
    contents: list[dict] = []
    calls: dict[str, tuple[str, _CallPlace]] = {}  # tool_call_id -> function name and place, latest call
    answer_rank: dict[int, _CallPlace] = {}  # id() of a functionResponse part -> the place of its call
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{position}] must be an object.", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), position))
            continue
        if role == "user":
            gemini_role, parts = "user", _user_parts(message.get("content"), position)
        elif role == "assistant":
            gemini_role, parts = "model", _assistant_parts(message, position, calls)
        elif role == "tool":
            gemini_role, parts = "user", [_function_response(message, position, calls)]
            answer_rank[id(parts[0])] = calls[message["tool_call_id"]][1]
        else:
            raise InvalidRequest(f"messages[{position}].role {role!r} is not supported.", param="messages")
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if not contents:
        raise InvalidRequest(
            "The request has no user or assistant message with content; Gemini needs at least one.",
            param="messages",
        )
    for content in contents:
        _put_answers_in_call_order(content["parts"], answer_rank)
    return system, contents


def _put_answers_in_call_order(parts: list[dict], answer_rank: dict[int, _CallPlace]) -> None:
    """OpenAI lets tool results come in any order (tool_call_id pairs them); Gemini pairs a turn's
    functionResponse parts with the calls by position (ids are normally absent), so results sent
    in another order would answer the wrong calls. Sorted in place, other parts keep their slots."""
    slots = [i for i, part in enumerate(parts) if id(part) in answer_rank]
    answers = sorted((parts[i] for i in slots), key=lambda part: answer_rank[id(part)])
    for slot, answer in zip(slots, answers, strict=True):
        parts[slot] = answer


def _text_of(content, position: int) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise InvalidRequest(f"messages[{position}].content must be a string or an array.", param="messages")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(_part_text(part, position))
        elif kind != "refusal":  # an assistant's earlier refusal is not context Gemini can use
            raise InvalidRequest(
                f"messages[{position}].content: part type {kind!r} is not allowed in this message.",
                param="messages",
            )
    return texts


def _part_text(part: dict, position: int) -> str:
    """A text part's text; one that is not a string cannot become Gemini's text (a list of them in a
    tool result failed to join)."""
    text = part.get("text")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidRequest(f"messages[{position}].content: a text part's 'text' must be a string.", param="messages")
    return text


def _text_parts(content, position: int) -> list[dict]:
    return [{"text": text} for text in _text_of(content, position) if text]


def _user_parts(content, position: int) -> list[dict]:
    if content is None or isinstance(content, str):
        return _text_parts(content, position)
    if not isinstance(content, list):
        raise InvalidRequest(f"messages[{position}].content must be a string or an array.", param="messages")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = _part_text(part, position)
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image_part(part.get("image_url"), f"messages[{position}]"))
        elif kind == "input_audio":
            parts.append(_audio_part(part.get("input_audio"), position))
        elif kind == "file":
            parts.append(_file_part(part.get("file"), position))
        else:
            raise InvalidRequest(
                f"messages[{position}].content: part type {kind!r} is not supported.", param="messages"
            )
    return parts


def _image_part(image, where: str, param: str = "messages") -> dict:
    """The part for an image_url (user content parts, assistant images); `where` names it in errors."""
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}: image_url.url is missing.", param=param)
    scheme = _scheme(url)
    if scheme == "data":
        mime, data = _data_url(url, where, param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if scheme in _FETCHABLE:
        return _file_uri_part(url)
    raise InvalidRequest(f"{where}: image_url must be an http(s) or data: URL.", param=param)


def _scheme(url: str) -> str | None:
    """A URL's scheme in lower case (RFC 3986: schemes ignore case, `HTTPS://` is `https://`), or None
    for text with none, as base64 (whose alphabet has no colon)."""
    match = _SCHEME.match(url)
    return match[1].lower() if match else None


def _file_uri_part(url: str, filename: str = "") -> dict:
    """fileData for an http(s) URL: Gemini fetches public and signed URLs itself, the gateway never
    fetches (docs/gemini.md). The MIME type is guessed from the filename, else the URL's path."""
    file_data = {"fileUri": url}
    mime = mimetypes.guess_type(filename)[0] or mimetypes.guess_type(url.split("?", 1)[0])[0]
    if mime:
        file_data["mimeType"] = mime
    return {"fileData": file_data}


def _data_url(url: str, where: str, param: str = "messages") -> tuple[str, str]:
    header, comma, data = url[5:].partition(",")
    params = header.split(";")
    if not comma or "base64" not in params[1:]:
        raise InvalidRequest(
            f"{where}: a data: URL must be base64 encoded (data:<mime>;base64,…).", param=param
        )
    mime = params[0].strip().lower() or "application/octet-stream"  # MIME types ignore case; Gemini does not
    return _MIME_ALIASES.get(mime, mime), data


def _audio_part(audio, position: int) -> dict:
    if not isinstance(audio, dict) or not audio.get("data"):
        raise InvalidRequest(f"messages[{position}]: input_audio.data is missing.", param="messages")
    fmt = audio.get("format") or "wav"
    if not isinstance(audio["data"], str) or not isinstance(fmt, str):  # not base64, not a MIME type's name
        raise InvalidRequest(
            f"messages[{position}]: input_audio.data and input_audio.format must be strings.", param="messages"
        )
    fmt = fmt.lower()
    return {"inlineData": {"mimeType": _AUDIO_MIME.get(fmt, f"audio/{fmt}"), "data": audio["data"]}}


def _file_part(file, position: int) -> dict:
    if not isinstance(file, dict):
        raise InvalidRequest(
            f"messages[{position}]: file part is missing its 'file' object.", param="messages"
        )
    data = file.get("file_data")
    if data and not isinstance(data, str):
        raise InvalidRequest(
            f"messages[{position}]: file.file_data must be a data: URL or base64 text.", param="messages"
        )
    if not data:
        if file.get("file_id"):
            raise InvalidRequest(
                "file_id refers to OpenAI's file store, which Gemini cannot read; send the file as file_data.",
                param="messages",
            )
        raise InvalidRequest(f"messages[{position}]: file.file_data is missing.", param="messages")
    filename = file.get("filename") or ""
    if not isinstance(filename, str):  # its extension tells the file's type: a number has none
        raise InvalidRequest(f"messages[{position}]: file.filename must be a string.", param="messages")
    scheme = _scheme(data)
    if scheme in _FETCHABLE:  # OpenRouter's file_data may be a URL
        return _file_uri_part(data, filename)
    if scheme == "data":
        mime, data = _data_url(data, f"messages[{position}]")
    elif scheme is not None:  # not base64 either: Gemini would answer "Base64 decoding failed"
        raise InvalidRequest(
            f"messages[{position}]: file.file_data must be a data: or http(s) URL, or base64 text, not a {scheme}: URL.",
            param="messages",
        )
    else:  # bare base64, as some clients send: the filename tells the type
        mime = mimetypes.guess_type(filename)[0] or "application/pdf"
    return {"inlineData": {"mimeType": mime, "data": data}}


def _assistant_parts(message: dict, position: int, calls_seen: dict[str, tuple[str, _CallPlace]]) -> list[dict]:
    # Text, then generated images, then calls: the order of a Gemini image answer (text first).
    parts = _text_parts(message.get("content"), position)
    if message.get("audio") and not parts:
        # An OpenAI audio answer replayed by id: dropped, the answer vanished from the history.
        raise InvalidRequest(
            f"messages[{position}].audio refers to OpenAI's stored audio, which Gemini cannot read; "
            "send the answer's transcript as the message's content.",
            param=f"messages[{position}].audio",
        )
    images = _list_of(message.get("images"), f"messages[{position}].images")
    parts.extend(
        _assistant_image_part(entry, f"messages[{position}].images[{index}]")
        for index, entry in enumerate(images)
    )
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"messages[{position}].tool_calls must be a list.", param="messages")
    signed = False
    for index, call in enumerate(calls):
        part = _function_call_part(call, position)
        calls_seen[call["id"]] = (part["functionCall"]["name"], (position, index))
        signed = signed or "thoughtSignature" in part
        parts.append(part)
    if calls and not signed:
        # History Gemini did not write (another model, a rebuilt transcript): Gemini 3 would answer
        # 400 "missing thought_signature" without this documented bypass value.
        next(p for p in parts if "functionCall" in p)["thoughtSignature"] = SKIP_SIGNATURE
    return parts


def _assistant_image_part(entry, where: str) -> dict:
    """An earlier answer's image (OpenRouter's `message.images` entry, as the gateway returns
    Gemini's images) back into the model turn, so Gemini sees the image it is asked to edit."""
    if not isinstance(entry, dict) or entry.get("type") != "image_url":
        raise InvalidRequest(
            f'{where} must be an image entry {{"type": "image_url", "image_url": {{"url": …}}}}.',
            param=where,
        )
    part = _image_part(entry.get("image_url"), where, where)
    part["thoughtSignature"] = _image_signature(entry, where)
    return part


def _image_signature(entry: dict, where: str) -> str:
    """The thoughtSignature the gateway put into the entry (`extra_content.google.thought_signature`,
    docs/gemini.md), else the documented bypass value: Gemini 3 image models refuse a replayed image
    part without a signature, and an entry another model (or the client) made has none."""
    extra = entry.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if signature is None:
        return SKIP_SIGNATURE
    if not _is_name(signature):
        raise InvalidRequest(f"{where}: extra_content.google.thought_signature must be a string.", param=where)
    return signature


def _function_call_part(call, position: int) -> dict:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not _is_name(function.get("name")) or not _is_name(call.get("id")):
        raise InvalidRequest(
            f"messages[{position}].tool_calls: each call needs an id and function.name.", param="messages"
        )
    arguments = function.get("arguments") or "{}"
    try:
        args = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            f"messages[{position}].tool_calls: arguments of {function['name']!r} are not valid JSON.",
            param="messages",
        ) from None
    if not isinstance(args, dict):
        raise InvalidRequest(
            f"messages[{position}].tool_calls: arguments of {function['name']!r} must be a JSON object.",
            param="messages",
        )
    signature, gemini_id = decode_tool_call_id(call["id"])
    function_call = {"name": function["name"], "args": args}
    if gemini_id:
        function_call["id"] = gemini_id
    part: dict = {"functionCall": function_call}
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_response(message: dict, position: int, calls: dict[str, tuple[str, _CallPlace]]) -> dict:
    call_id = message.get("tool_call_id")
    name = calls[call_id][0] if isinstance(call_id, str) and call_id in calls else None
    if name is None:
        raise InvalidRequest(
            f"messages[{position}]: tool_call_id {call_id!r} does not match a tool call of an earlier assistant message.",
            param="messages",
        )
    text = "".join(_text_of(message.get("content"), position))
    response = None
    if text.lstrip().startswith("{"):
        try:
            response = orjson.loads(text)
        except orjson.JSONDecodeError:
            response = None
    if not isinstance(response, dict):
        response = {"result": text}
    function_response = {"name": name, "response": response}
    gemini_id = decode_tool_call_id(call_id)[1]
    if gemini_id:
        function_response["id"] = gemini_id
    return {"functionResponse": function_response}


# --- tools ---------------------------------------------------------------------------------------


def _refuse_unhonourable(body: dict) -> None:
    """A 400 naming each parameter of _REFUSED that asks for something (empty values and
    function_call "none" ask for nothing)."""
    for param, reason in _REFUSED.items():
        value = body.get(param)
        if value and value != "none":
            raise InvalidRequest(f"'{param}' {reason}", param=param)


def _tools(body: dict) -> list[dict]:
    """Every function tool in one Tool, and Google Search in its own when `web_search_options` asks
    for web search: the response side turns its groundingMetadata into url_citation annotations."""
    tools = []
    functions = body.get("tools")
    if functions:
        tools.append({"functionDeclarations": [_function_declaration(tool) for tool in _list_of(functions, "tools")]})
    search = body.get("web_search_options")
    if search is not None:
        if not isinstance(search, dict):
            raise InvalidRequest("'web_search_options' must be an object.", param="web_search_options")
        # user_location (names, while Gemini's retrievalConfig wants coordinates) and
        # search_context_size have no Gemini equivalent (docs/gemini.md).
        tools.append({"googleSearch": {}})
    return tools


def _function_declaration(tool) -> dict:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not function.get("name"):
        raise InvalidRequest("Gemini supports only tools of type 'function' with a name.", param="tools")
    declaration = {"name": function["name"], "description": function.get("description") or ""}
    if function.get("parameters"):
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _tool_config(choice) -> dict | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        mode = _TOOL_CHOICE_MODE.get(choice)
        if mode is None:
            raise InvalidRequest(f"tool_choice {choice!r} is not supported.", param="tool_choice")
        return {"functionCallingConfig": {"mode": mode}}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
        }
    if kind == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
        allowed = choice["allowed_tools"]
        mode = allowed.get("mode")
        mode = _ALLOWED_TOOLS_MODE.get(mode) if isinstance(mode, str) else None  # a list cannot be looked up
        if mode is None:  # a guess could let the model answer in text where a call was to be forced
            raise InvalidRequest("tool_choice.allowed_tools.mode must be 'auto' or 'required'.", param="tool_choice")
        names = [_allowed_tool_name(tool) for tool in _list_of(allowed.get("tools"), "tool_choice")]
        return {"functionCallingConfig": {"mode": mode, "allowedFunctionNames": names}}
    raise InvalidRequest("tool_choice is not a form Gemini can honour.", param="tool_choice")


def _allowed_tool_name(tool) -> str:
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not _is_name(name):
        raise InvalidRequest("tool_choice.allowed_tools.tools: each tool needs function.name.", param="tool_choice")
    return name


# --- generationConfig ----------------------------------------------------------------------------


def _generation_config(body: dict) -> dict:
    config = {
        gemini: body[openai] for openai, gemini in _GENERATION_FIELDS.items() if body.get(openai) is not None
    }
    seed = config.get("seed")
    if isinstance(seed, int) and not -(2**31) <= seed < 2**31:
        config["seed"] = seed % 2**31  # OpenAI seeds are int64, Gemini's int32: fold, still deterministic
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        stops = [stop] if isinstance(stop, str) else _list_of(stop, "stop")
        if not all(isinstance(sequence, str) for sequence in stops):
            raise InvalidRequest("'stop' must be a string or a list of strings.", param="stop")
        config["stopSequences"] = stops
    config.update(_response_format(body.get("response_format")))
    budget = _thinking_budget(body)
    if budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": budget}
    modalities = _response_modalities(body.get("modalities"))
    if modalities:
        config["responseModalities"] = modalities
    return config


def _budget_of(effort, param: str) -> int:
    if not isinstance(effort, str) or effort not in _THINKING_BUDGET:
        raise InvalidRequest(f"{param} {effort!r} is not supported.", param=param)
    return _THINKING_BUDGET[effort]


def _thinking_budget(body: dict) -> int | None:
    """OpenAI's `reasoning_effort`, else OpenRouter's `reasoning` object (`enabled`, `max_tokens`,
    `effort`; `exclude` has nothing to map: Gemini's thoughts are not asked for), as a thinkingBudget;
    None leaves the model's own default."""
    effort = body.get("reasoning_effort")
    if effort is not None:
        return _budget_of(effort, "reasoning_effort")
    reasoning = body.get("reasoning")
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise InvalidRequest("'reasoning' must be an object.", param="reasoning")
    if reasoning.get("enabled") is False:
        return 0
    tokens = reasoning.get("max_tokens")
    if tokens is not None:
        if type(tokens) is not int or not 0 <= tokens < 2**31:
            raise InvalidRequest("'reasoning.max_tokens' must be a non-negative integer.", param="reasoning.max_tokens")
        return tokens
    if reasoning.get("effort") is None:
        return None
    return _budget_of(reasoning["effort"], "reasoning.effort")


def _response_format(response_format) -> dict:
    """The generationConfig fields for `response_format`. One Gemini cannot read is a 400: dropped,
    it gave free text to a client that asked for a structured answer."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if response_format is None or kind == "text":
        return {}
    json_schema = response_format.get("json_schema") if kind == "json_schema" else None
    if kind not in ("json_object", "json_schema") or not isinstance(json_schema, dict | None):
        raise InvalidRequest(
            'response_format must be {"type": "text"}, {"type": "json_object"} or '
            '{"type": "json_schema", "json_schema": {…}}.',
            param="response_format",
        )
    config = {"responseMimeType": "application/json"}
    schema = json_schema.get("schema") if json_schema else None
    if schema:  # without one, JSON mode only
        config["responseJsonSchema"] = schema
    return config


def _response_modalities(modalities) -> list[str]:
    """`modalities` as Gemini's responseModalities, in order, without repeats; [] sends nothing."""
    out: list[str] = []
    for modality in _list_of(modalities, "modalities"):
        if modality == "audio":
            raise InvalidRequest(
                "modalities: 'audio' output is not supported for Gemini models; use 'text' and/or 'image'.",
                param="modalities",
            )
        if not isinstance(modality, str) or modality not in _MODALITIES:
            raise InvalidRequest(
                f"modalities: {modality!r} is not a supported output modality ('text', 'image').",
                param="modalities",
            )
        if _MODALITIES[modality] not in out:
            out.append(_MODALITIES[modality])
    return out
