"""A fake Gemini API (Generative Language v1beta) on real HTTP, for tests and benchmarks.

It behaves like the real service where our gateway could tell the difference
(wire-formats.md §3 and §4.8, the protos in shared/specs/gemini-v1beta-protos):

* `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (also under `tunedModels/`;
  `?alt=sse` gives SSE
  events separated by `\\r\\n\\r\\n`, no `[DONE]`, no comments; without it a streamed JSON array);
* the key in `x-goog-api-key` or `?key=`: missing -> 403 PERMISSION_DENIED, wrong -> 400 API_KEY_INVALID;
* request bodies checked against the v1beta messages: camelCase or snake_case, an unknown field ->
  400 `Invalid JSON payload received. Unknown name …`, empty contents/parts, a part without data,
  unequal functionCall/functionResponse counts, bad base64, and (when `require_thought_signatures`,
  like Gemini 3 and its image models) replayed function calls and model-turn images without the
  signature this server issued;
* errors as `{"error":{"code","message","status","details"}}`.

Every request is recorded (`requests`); replies are scripted per test with `enqueue()` and fall
back to a deterministic echo with running usage. Use it with `async with FakeGemini() as fake`,
from sync code with `with FakeGemini() as fake` (own thread and loop), or as a process:
`python -m aiproxy.testing.fake_gemini --port N` (prints its base URL on the first line).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import math
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from aiproxy.testing.awkward_sse import EventStreamWrites, write_event_stream
from aiproxy.testing.trickle import TrickleReply, trickle

DEFAULT_KEY = "fake-gemini-key"
SKIP_SIGNATURE = "skip_thought_signature_validator"
_RPC = "type.googleapis.com/google.rpc."
_PATH = re.compile(
    r"^/v1beta/(?P<model>(?:models|tunedModels)/[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)

# --- the v1beta request messages (field -> nested message, [message] when repeated, None for scalars
# and free-form Struct/Value fields), from generative_service.proto, content.proto and safety.proto.
REQUEST_MESSAGES: dict[str, dict[str, Any]] = {
    "GenerateContentRequest": {
        "model": None,
        "systemInstruction": "Content",
        "contents": ["Content"],
        "tools": ["Tool"],
        "toolConfig": "ToolConfig",
        "safetySettings": ["SafetySetting"],
        "generationConfig": "GenerationConfig",
        "cachedContent": None,
    },
    "Content": {"parts": ["Part"], "role": None},
    "Part": {
        "text": None,
        "inlineData": "Blob",
        "functionCall": "FunctionCall",
        "functionResponse": "FunctionResponse",
        "fileData": "FileData",
        "executableCode": "ExecutableCode",
        "codeExecutionResult": "CodeExecutionResult",
        "videoMetadata": "VideoMetadata",
        "thought": None,
        "thoughtSignature": None,
        "partMetadata": None,
    },
    "Blob": {"mimeType": None, "data": None},
    "FileData": {"mimeType": None, "fileUri": None},
    "FunctionCall": {"id": None, "name": None, "args": None},
    "FunctionResponse": {
        "id": None,
        "name": None,
        "response": None,
        "parts": ["FunctionResponsePart"],
        "willContinue": None,
        "scheduling": None,
    },
    "FunctionResponsePart": {"inlineData": "Blob"},
    "ExecutableCode": {"language": None, "code": None},
    "CodeExecutionResult": {"outcome": None, "output": None},
    "VideoMetadata": {"startOffset": None, "endOffset": None, "fps": None},
    "Tool": {
        "functionDeclarations": ["FunctionDeclaration"],
        "googleSearchRetrieval": None,
        "codeExecution": None,
        "googleSearch": "GoogleSearch",
        "computerUse": None,
        "urlContext": None,
        "fileSearch": None,
        "googleMaps": None,
    },
    "GoogleSearch": {"timeRangeFilter": None},
    "FunctionDeclaration": {
        "name": None,
        "description": None,
        "parameters": None,
        "parametersJsonSchema": None,
        "response": None,
        "responseJsonSchema": None,
        "behavior": None,
    },
    "ToolConfig": {"functionCallingConfig": "FunctionCallingConfig", "retrievalConfig": None},
    "FunctionCallingConfig": {"mode": None, "allowedFunctionNames": None},
    "SafetySetting": {"category": None, "threshold": None},
    "GenerationConfig": {
        "candidateCount": None,
        "stopSequences": None,
        "maxOutputTokens": None,
        "temperature": None,
        "topP": None,
        "topK": None,
        "seed": None,
        "responseMimeType": None,
        "responseSchema": None,
        "responseJsonSchema": None,
        "responseJsonSchemaOrdered": None,
        "presencePenalty": None,
        "frequencyPenalty": None,
        "responseLogprobs": None,
        "logprobs": None,
        "enableEnhancedCivicAnswers": None,
        "responseModalities": None,
        "speechConfig": None,
        "thinkingConfig": "ThinkingConfig",
        "imageConfig": None,
        "mediaResolution": None,
    },
    "ThinkingConfig": {"includeThoughts": None, "thinkingBudget": None},
}
# Typed scalars the gateway fills from client input, checked as proto3 JSON parsing does.
_SCALARS: dict[str, dict[str, str]] = {
    "GenerationConfig": {
        "candidateCount": "int32", "maxOutputTokens": "int32", "topK": "int32", "seed": "int32",
        "logprobs": "int32", "temperature": "float", "topP": "float", "presencePenalty": "float",
        "frequencyPenalty": "float", "responseLogprobs": "bool", "responseMimeType": "string",
        "stopSequences": "strings",
    },
    "ThinkingConfig": {"includeThoughts": "bool", "thinkingBudget": "int32"},
    "Content": {"role": "string"},
    "Part": {"text": "string", "thought": "bool", "thoughtSignature": "bytes"},
    "Blob": {"mimeType": "string", "data": "bytes"},
    "FileData": {"mimeType": "string", "fileUri": "string"},
    "FunctionCall": {"id": "string", "name": "string"},
    "FunctionResponse": {"id": "string", "name": "string"},
    "FunctionDeclaration": {"name": "string", "description": "string"},
}
# The proto type a _SCALARS kind names in the API's "Invalid value at '…' (TYPE_…)" message.
_PROTO_TYPES = {"strings": "STRING", "bytes": "BYTES"}
_MODALITIES = frozenset({"MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"})  # GenerationConfig.Modality
_DATA_FIELDS = (
    "text",
    "inlineData",
    "functionCall",
    "functionResponse",
    "fileData",
    "executableCode",
    "codeExecutionResult",
)


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


# Each message's accepted JSON names (camelCase and snake_case) -> canonical camelCase name.
_NAMES = {
    message: {**{f: f for f in fields}, **{_snake(f): f for f in fields}}
    for message, fields in REQUEST_MESSAGES.items()
}


class FakeGeminiError(Exception):
    """A request the real API would refuse; becomes a google.rpc.Status error body."""

    def __init__(self, code: int, status: str, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.body = error_body(code, status, message, details)
        self.code = code


# --- reply builders (what tests script) -----------------------------------------------------------


@dataclass
class JsonReply:
    """One JSON answer (also sent as a single SSE event when the request streams)."""

    body: dict
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class StreamReply:
    """SSE events; `cut` drops the connection after them instead of ending the response cleanly;
    `split` sends the bytes in pieces of that size (1 ms apart), so events arrive cut anywhere."""

    events: list[dict]
    delay: float = 0.0
    cut: bool = False
    split: int = 0


def error_body(code: int, status: str, message: str, details: list[dict] | None = None) -> dict:
    error: dict = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def error_reply(code: int, status: str, message: str, details: list[dict] | None = None) -> JsonReply:
    return JsonReply(error_body(code, status, message, details), status=code)


def rate_limited(
    retry_delay: str = "22s", quota_id: str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
) -> JsonReply:
    """429 RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo, as the real API sends it."""
    return error_reply(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more information on "
        "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        [
            {
                "@type": _RPC + "QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": quota_id,
                        "quotaValue": "10",
                    }
                ],
            },
            {"@type": _RPC + "RetryInfo", "retryDelay": retry_delay},
        ],
    )


def usage_metadata(prompt: int, candidates: int, thoughts: int = 0, cached: int = 0) -> dict:
    """usageMetadata with zero counters omitted, as the real API does."""
    fields = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": thoughts,
        "cachedContentTokenCount": cached,
        "totalTokenCount": prompt + candidates + thoughts,
    }
    return {key: value for key, value in fields.items() if value}


def candidate(parts: list[dict], finish: str | None = "STOP", index: int = 0) -> dict:
    out: dict = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        out["finishReason"] = finish
    return out


def response(candidates: list[dict], usage: dict | None = None, model: str = "gemini-fake") -> dict:
    body: dict = {"candidates": candidates, "modelVersion": model, "responseId": uuid.uuid4().hex[:22]}
    if usage:
        body["usageMetadata"] = usage
    return body


def text_response(text: str, finish: str = "STOP", usage: dict | None = None) -> dict:
    return response([candidate([{"text": text}], finish)], usage or usage_metadata(4, len(text.split())))


def image_part(data: bytes, mime: str = "image/png", thought_signature: str | None = None) -> dict:
    """A generated image as gemini-2.5-flash-image returns it: camelCase inlineData, base64 data;
    Gemini 3 image models also sign every image part (`thought_signature`)."""
    part: dict = {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}
    if thought_signature:
        part["thoughtSignature"] = thought_signature
    return part


def image_response(*images: dict, text: str = "") -> dict:
    """A nano-banana answer: the optional text part first, then the image parts; usage counts
    each image as the 1290 IMAGE tokens Gemini bills for a 1024x1024 image."""
    parts = ([{"text": text}] if text else []) + list(images)
    usage = usage_metadata(6, len(text.split()) + 1290 * len(images))
    usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": 1290 * len(images)}]
    return response([candidate(parts)], usage)


def function_call_response(
    *calls: tuple[str, dict], thought_signature: str | None = None, text: str = ""
) -> dict:
    """A model turn calling functions; like Gemini 3, only the first call carries the signature."""
    parts: list[dict] = [{"text": text}] if text else []
    for position, (name, args) in enumerate(calls):
        part: dict = {"functionCall": {"name": name, "args": args}}
        if position == 0 and thought_signature:
            part["thoughtSignature"] = thought_signature
        parts.append(part)
    return response([candidate(parts)], usage_metadata(20, 5 * len(calls)))


def _byte_span(text: str, passage: str) -> dict:
    """Where `passage` lies in `text`, in UTF-8 bytes as Gemini counts, zeros left out (proto3 JSON)."""
    start = len(text[: text.index(passage)].encode())
    span = {"startIndex": start, "endIndex": start + len(passage.encode())}
    return {key: value for key, value in span.items() if value}


def grounding_metadata(text: str, *supports: tuple[str, str, str], part_index: int = 0) -> dict:
    """A candidate's groundingMetadata as Google Search grounding returns it: one web chunk per
    (uri, title) and, for each (passage of `text`, uri, title), a support whose segment gives the
    passage in UTF-8 bytes of the part `part_index` (here `text`), with the passage's own text."""
    chunks: list[dict] = []
    grounding_supports = []
    for passage, uri, title in supports:
        web = {"uri": uri, "title": title}
        if {"web": web} not in chunks:
            chunks.append({"web": web})
        segment = {**_byte_span(text, passage), "text": passage}
        if part_index:
            segment["partIndex"] = part_index
        grounding_supports.append({"segment": segment, "groundingChunkIndices": [chunks.index({"web": web})]})
    return {
        "searchEntryPoint": {"renderedContent": "<div class=\"container\">…</div>"},
        "groundingChunks": chunks,
        "groundingSupports": grounding_supports,
        "webSearchQueries": [supports[0][0]] if supports else [],
    }


def citation_metadata(text: str, *sources: tuple[str, str, str | None]) -> dict:
    """A candidate's citationMetadata (recitation sources): for each (passage of `text`, uri,
    license or None) a source with the passage's UTF-8 byte offsets in the candidate's text."""
    citations = []
    for passage, uri, license_name in sources:
        citation = {**_byte_span(text, passage), "uri": uri}
        if license_name:
            citation["license"] = license_name
        citations.append(citation)
    return {"citationSources": citations}


def blocked_prompt(reason: str = "SAFETY") -> dict:
    """HTTP 200, no candidates, promptFeedback.blockReason: the real API's prompt block."""
    ratings = [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    ]
    return {
        "promptFeedback": {"blockReason": reason, "safetyRatings": ratings},
        "usageMetadata": usage_metadata(8, 0),
        "modelVersion": "gemini-fake",
        "responseId": uuid.uuid4().hex[:22],
    }


def text_stream(
    pieces: list[str], finish: str = "STOP", prompt_tokens: int = 4, thoughts: int = 0
) -> StreamReply:
    """One event per piece, running usage in every event, finishReason on the last."""
    events, produced = [], 0
    for position, piece in enumerate(pieces):
        produced += len(piece.split()) or 1
        last = position == len(pieces) - 1
        events.append(
            response(
                [candidate([{"text": piece}], finish if last else None)],
                usage_metadata(prompt_tokens, produced, thoughts),
            )
        )
    return StreamReply(events)


# --- request validation ---------------------------------------------------------------------------


def _check_fields(value: Any, message: str, path: str) -> None:
    """Unknown JSON names anywhere in the message tree -> the real API's 400."""
    names = _NAMES[message]
    fields = REQUEST_MESSAGES[message]
    if not isinstance(value, dict):
        raise _invalid(f"Invalid value at '{path or 'request'}': expected an object for {message}.", path)
    for key, item in value.items():
        canonical = names.get(key)
        if canonical is None:
            where = f" at '{path}'" if path else ""
            raise _invalid(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.', path
            )
        nested = fields[canonical]
        child = f"{path}.{_snake(canonical)}" if path else _snake(canonical)
        if isinstance(nested, list):
            for position, element in enumerate(item if isinstance(item, list) else [item]):
                _check_fields(element, nested[0], f"{child}[{position}]")
        elif nested is not None:
            _check_fields(item, nested, child)
        elif canonical in _SCALARS.get(message, {}) and not _scalar_ok(item, _SCALARS[message][canonical]):
            kind = _SCALARS[message][canonical]
            kind = _PROTO_TYPES.get(kind, kind.upper())
            raise _invalid(f"Invalid value at '{child}' (TYPE_{kind}), {orjson.dumps(item).decode()}", child)


def _scalar_ok(value: Any, kind: str) -> bool:
    """Whether proto3 JSON parsing accepts value for a field of this kind (numbers may be strings)."""
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("string", "bytes"):  # bytes travel as base64 text, checked as such in _check_parts
        return isinstance(value, str)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if isinstance(value, bool):
        return False
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        return False
    if kind == "float":
        return isinstance(number, int | float)
    return (isinstance(number, int | float) and math.isfinite(number) and number == int(number)
            and -(2**31) <= number < 2**31)


def _invalid(message: str, path: str = "") -> FakeGeminiError:
    violation = {"field": path, "description": message} if path else {"description": message}
    return FakeGeminiError(
        400, "INVALID_ARGUMENT", message, [{"@type": _RPC + "BadRequest", "fieldViolations": [violation]}]
    )


def _canonical(value: Any, message: str) -> Any:
    """The request with camelCase names throughout, so the semantic checks read one spelling."""
    fields, names = REQUEST_MESSAGES[message], _NAMES[message]
    out = {}
    for key, item in value.items():
        name = names[key]
        nested = fields[name]
        if isinstance(nested, list):
            out[name] = [_canonical(e, nested[0]) for e in (item if isinstance(item, list) else [item])]
        elif nested is not None:
            out[name] = _canonical(item, nested)
        else:
            out[name] = _number(item, _SCALARS.get(message, {}).get(name))
    return out


def _number(value: Any, kind: str | None) -> Any:
    """A number field as the server reads it: proto3 JSON takes "2" and 2.0 for an int32 (checked by
    _check_fields), the service sees 2."""
    if kind == "int32":
        return int(float(value))
    if kind == "float":
        return float(value)
    return value


def _check_semantics(request: dict, issued_signatures: set[str] | None) -> None:
    contents = request.get("contents") or []
    if not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified\n", "contents")
    for i, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model"):
            raise _invalid("Please use a valid role: user, model.", f"contents[{i}].role")
        _check_parts(content.get("parts") or [], f"contents[{i}]")
    if "systemInstruction" in request:
        _check_parts(request["systemInstruction"].get("parts") or [], "system_instruction")
    if issued_signatures is not None:
        _check_image_signatures(contents, issued_signatures)
    for i, content in enumerate(contents):
        calls = [p for p in content["parts"] if "functionCall" in p]
        if content.get("role") != "model" or not calls:
            continue
        if i + 1 < len(contents):
            answers = [p for p in contents[i + 1]["parts"] if "functionResponse" in p]
            if len(answers) != len(calls):
                raise _invalid(
                    "Please ensure that the number of function response parts is equal to the number of function "
                    "call parts of the function call turn."
                )
        signature = calls[0].get("thoughtSignature")
        if (
            issued_signatures is not None
            and signature != SKIP_SIGNATURE
            and signature not in issued_signatures
        ):
            raise _invalid(
                f"Function call is missing a thought_signature in functionCall parts. This is required for tools "
                f"to work correctly, and missing thought_signature may lead to degraded model performance. "
                f"Additional data, function call `default_api:{calls[0]['functionCall'].get('name')}` , position "
                f"{i + 1}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
    config = request.get("generationConfig") or {}
    if "responseJsonSchema" in config and "responseSchema" in config:
        raise _invalid("response_schema and response_json_schema cannot both be set.", "generation_config")
    if "responseJsonSchema" in config and config.get("responseMimeType") != "application/json":
        raise _invalid(
            "response_mime_type must be application/json when response_json_schema is set.",
            "generation_config.response_mime_type",
        )
    for position, modality in enumerate(config.get("responseModalities") or []):
        if modality not in _MODALITIES:
            raise _invalid(
                f"Invalid value at 'generation_config.response_modalities[{position}]' (type.googleapis.com/"
                f"google.ai.generativelanguage.v1beta.GenerationConfig.Modality), {orjson.dumps(modality).decode()}",
                f"generation_config.response_modalities[{position}]",
            )
    if len(config.get("stopSequences") or []) > 5:
        raise _invalid(
            "stop_sequences: at most 5 stop sequences are allowed.", "generation_config.stop_sequences"
        )


def _check_image_signatures(contents: list[dict], issued_signatures: set[str]) -> None:
    """Gemini 3 image models refuse a model turn that replays an image without its signature."""
    for i, content in enumerate(contents):
        if content.get("role") != "model":
            continue
        for j, part in enumerate(content["parts"]):
            mime = (part.get("inlineData") or {}).get("mimeType") or ""
            signature = part.get("thoughtSignature")
            if mime.startswith("image/") and signature != SKIP_SIGNATURE and signature not in issued_signatures:
                raise _invalid(
                    f"Image part is missing a thought_signature in content position {i + 1}, part position "
                    f"{j + 1}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more "
                    "details."
                )


def _check_parts(parts: list[dict], path: str) -> None:
    if not parts:
        raise _invalid(
            f"* GenerateContentRequest.{path}.parts: contents.parts must not be empty.\n", f"{path}.parts"
        )
    for j, part in enumerate(parts):
        data = [name for name in _DATA_FIELDS if name in part]
        if not data:
            raise _invalid(
                f"* GenerateContentRequest.{path}.parts[{j}].data: required oneof field 'data' must have one "
                "initialized field\n",
                f"{path}.parts[{j}]",
            )
        if len(data) > 1:
            raise _invalid(
                f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{data[1]}'",
                f"{path}.parts[{j}]",
            )
        blob = part.get("inlineData")
        if blob is not None:
            try:
                base64.b64decode(blob.get("data") or "", validate=True)
            except (binascii.Error, ValueError):
                raise _invalid(
                    f"Invalid value at '{path}.parts[{j}].inline_data.data' (TYPE_BYTES), Base64 "
                    "decoding failed",
                    f"{path}.parts[{j}].inline_data.data",
                ) from None
        if "functionResponse" in part and not isinstance(part["functionResponse"].get("response"), dict):
            raise _invalid(
                f"Invalid value at '{path}.parts[{j}].function_response.response' (type.googleapis.com/"
                "google.protobuf.Struct)",
                f"{path}.parts[{j}].function_response.response",
            )
        if "functionCall" in part and not isinstance(part["functionCall"].get("args", {}), dict):
            raise _invalid(
                f"Invalid value at '{path}.parts[{j}].function_call.args' (type.googleapis.com/"
                "google.protobuf.Struct)",
                f"{path}.parts[{j}].function_call.args",
            )


# --- the server -----------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    json: Any
    cancelled: bool = False  # the client went away before the answer was complete


class FakeGemini:
    def __init__(
        self,
        api_key: str = DEFAULT_KEY,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        require_thought_signatures: bool = False,
        latency: float = 0.0,
        stream_chunks: int = 2,
        models: set[str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.latency = latency  # seconds before every answer
        self.stream_chunks = stream_chunks  # events in the default streamed answer
        self.models = models  # None: every model id exists
        self.requests: list[RecordedRequest] = []
        self._replies: collections.deque[JsonReply | StreamReply | TrickleReply | EventStreamWrites] = (
            collections.deque()
        )
        # Signatures this server handed out; None when replays need none (Gemini 2.x behaviour).
        self._issued: set[str] | None = set() if require_thought_signatures else None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def last_json(self) -> Any:
        return self.requests[-1].json

    def enqueue(self, *replies: JsonReply | StreamReply | TrickleReply | EventStreamWrites | dict) -> None:
        """Script the next answers, in order; a dict is a 200 JSON body."""
        self._replies.extend(JsonReply(r) if isinstance(r, dict) else r for r in replies)

    def reset(self) -> None:
        """Forget recorded requests and unused scripted replies (between tests sharing one server)."""
        self.requests.clear()
        self._replies.clear()

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGemini:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def __enter__(self) -> FakeGemini:
        """Serve from a background thread with its own event loop (for sync tests and fixtures)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-gemini", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(10)  # start errors surface here
        except BaseException:
            self._stop_thread()
            raise
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._stop_thread()

    def _stop_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        record = RecordedRequest(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        self.requests.append(record)
        match = _PATH.match(request.path)
        try:
            if match is None:
                raise FakeGeminiError(404, "NOT_FOUND", f"Method not found: {request.path}")
            self._check_key(request)
            if self.models is not None and match["model"].removeprefix("models/") not in self.models:
                raise FakeGeminiError(
                    404,
                    "NOT_FOUND",
                    f"{match['model']} is not found for API version v1beta, or is not supported for "
                    f"{match['method']}. Call ListModels to see the list of available models and their supported "
                    "methods.",
                )
            if not isinstance(body, dict):
                raise _invalid("Invalid JSON payload received. Expected an object.")
            _check_fields(body, "GenerateContentRequest", "")
            body = _canonical(body, "GenerateContentRequest")
            _check_semantics(body, self._issued)
        except FakeGeminiError as error:
            return web.json_response(error.body, status=error.code, dumps=lambda o: orjson.dumps(o).decode())
        streaming = match["method"] == "streamGenerateContent"
        reply = self._replies.popleft() if self._replies else _echo(body, streaming, self.stream_chunks)
        self._remember_signatures(reply)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if isinstance(reply, TrickleReply):
                return await trickle(request, reply)
            if isinstance(reply, EventStreamWrites):
                return await write_event_stream(request, reply)
            if not streaming:
                if isinstance(reply, StreamReply):
                    raise web.HTTPInternalServerError(
                        text="fake_gemini: a StreamReply was scripted for generateContent"
                    )
                return await self._json(reply)
            if isinstance(reply, JsonReply) and reply.status >= 400:
                return await self._json(reply)
            stream = reply if isinstance(reply, StreamReply) else StreamReply([reply.body], delay=reply.delay)
            return await self._stream(request, stream, sse=request.query.get("alt") == "sse")
        except (asyncio.CancelledError, ConnectionResetError):
            record.cancelled = True
            raise

    def _check_key(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise FakeGeminiError(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). Please use "
                "API Key or other form of API consumer identity to call this API.",
            )
        if key != self.api_key:
            raise FakeGeminiError(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": _RPC + "ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                ],
            )

    def _remember_signatures(self, reply: JsonReply | StreamReply | TrickleReply | EventStreamWrites) -> None:
        if self._issued is None or isinstance(reply, TrickleReply | EventStreamWrites):
            return
        for body in reply.events if isinstance(reply, StreamReply) else [reply.body]:
            for cand in body.get("candidates") or ():
                for part in (cand.get("content") or {}).get("parts") or ():
                    if part.get("thoughtSignature"):
                        self._issued.add(part["thoughtSignature"])

    async def _json(self, reply: JsonReply) -> web.Response:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            body=orjson.dumps(reply.body),
            status=reply.status,
            headers={"content-type": "application/json; charset=UTF-8", **reply.headers},
        )

    async def _stream(self, request: web.Request, reply: StreamReply, sse: bool) -> web.StreamResponse:
        content_type = "text/event-stream" if sse else "application/json; charset=UTF-8"
        out = web.StreamResponse(headers={"content-type": content_type})
        await out.prepare(request)
        for position, event in enumerate(reply.events):
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if sse:
                frame = b"data: " + orjson.dumps(event) + b"\r\n\r\n"
            else:
                frame = (b"[" if position == 0 else b",\r\n") + orjson.dumps(event)
            step = reply.split or len(frame)
            for start in range(0, len(frame), step):
                await out.write(frame[start : start + step])
                if reply.split:
                    await asyncio.sleep(0.001)
        if reply.cut:
            request.transport.abort()  # no terminating chunk: the client sees a broken body
            return out
        if not sse:
            await out.write(b"]" if reply.events else b"[]")
        await out.write_eof()
        return out


def _echo(request: dict, streaming: bool, chunks: int) -> JsonReply | StreamReply:
    """The default answer: `echo: <last user text>` in each of the candidateCount candidates; streamed
    in two halves with running usage, then `chunks - 2` filler words (benchmarks want longer streams)."""
    contents = request.get("contents") or [{}]
    text = next((p["text"] for p in reversed(contents[-1].get("parts") or []) if "text" in p), "")
    answer = f"echo: {text}"
    prompt_tokens = max(1, len(text.split()))
    count = (request.get("generationConfig") or {}).get("candidateCount") or 1
    if not streaming:
        reply = text_response(answer, usage=usage_metadata(prompt_tokens, count * len(answer.split())))
        return JsonReply(_as_candidates(reply, count))
    middle = len(answer) // 2
    fillers = [f" word{i}" for i in range(2, chunks)]
    stream = text_stream([answer[:middle], answer[middle:], *fillers], prompt_tokens=prompt_tokens)
    return StreamReply([_as_candidates(event, count) for event in stream.events])


def _as_candidates(body: dict, count: int) -> dict:
    """body with its one candidate repeated as `count` (candidateCount) candidates, indexed 0…count-1."""
    if count > 1:
        body["candidates"] = [{**body["candidates"][0], "index": index} for index in range(count)]
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake Gemini v1beta API for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    parser.add_argument("--require-thought-signatures", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--stream-chunks", type=int, default=2, help="events in the default streamed answer")
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeGemini(
            args.api_key,
            host=args.host,
            port=args.port,
            require_thought_signatures=args.require_thought_signatures,
            latency=args.latency_ms / 1000,
            stream_chunks=args.stream_chunks,
        )
        await fake.start()
        print(fake.base_url, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
