"""Fold a stream of chat.completion.chunk dicts into the chat.completion it amounts to, for the
request log (content, as text or parts, tool calls by index, a deprecated function call, audio, logprobs,
finish reason and usage per choice; generated images, and OpenRouter's reasoning, citations, provider and
native finish reason, which its JSON answers carry too)."""

from __future__ import annotations

import orjson

_ENVELOPE = ("id", "created", "model", "system_fingerprint", "service_tier", "provider")
_TEXTS = ("refusal", "reasoning")  # delta fields streamed as pieces of one text
# delta fields streamed as pieces of one list (images: each whole in the delta it arrives in)
_LISTS = ("reasoning_details", "annotations", "images")
_LOGPROBS = ("content", "refusal")  # choice.logprobs lists, one entry per token, concatenated
_AUDIO_TEXTS = ("data", "transcript")  # delta.audio fields streamed in pieces (base64, text); id and expires_at whole
# What a choice or a tool call adds to the record even when empty (its keys, about 70 characters of
# JSON): counted in `size`, or an upstream numbering empty deltas 0, 1, 2… grew it past any limit.
ENTRY_SIZE = 64


class StreamAssembler:
    __slots__ = ("_envelope", "_choices", "_usage", "size")

    def __init__(self) -> None:
        self._envelope: dict = {}
        self._choices: dict[int, dict] = {}
        self._usage: dict | None = None
        self.size = 0  # characters of answer held (texts, tool calls, JSON of list items): what the record grows by

    def add(self, chunk: dict) -> None:
        if not self._envelope:
            self._envelope = {k: chunk[k] for k in _ENVELOPE if k in chunk}
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            index = _index(choice.get("index"), 0)
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = {"role": "assistant", "content": [], "tool_calls": {}, "finish_reason": None}
                self.size += ENTRY_SIZE
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            content = delta.get("content")
            if isinstance(content, str):
                state["content"].append(content)
                self.size += len(content)
            elif isinstance(content, list) and content:  # parts (Mistral's thinking blocks): kept, merged in result()
                state["content"].extend(content)
                state["parts"] = True
                self.size += _json_size(content)
            for key in _TEXTS:  # joined, like content
                if isinstance(delta.get(key), str):
                    state.setdefault(key, []).append(delta[key])
                    self.size += len(delta[key])
            for key in _LISTS:  # concatenated
                if isinstance(delta.get(key), list):
                    state.setdefault(key, []).extend(delta[key])
                    self.size += _json_size(delta[key])
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._add_tool_call(state["tool_calls"], call)
            if isinstance(delta.get("function_call"), dict):  # the deprecated `functions` API: one call
                self._add_function(state.setdefault("function_call", {"name": [], "arguments": []}),
                                   delta["function_call"])
            if isinstance(delta.get("audio"), dict):
                self._add_audio(state, delta["audio"])
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict):
                pieces = state.setdefault("logprobs", {key: None for key in _LOGPROBS})
                for key in _LOGPROBS:
                    if isinstance(logprobs.get(key), list):
                        if pieces[key] is None:
                            pieces[key] = []
                        pieces[key].extend(logprobs[key])
                        self.size += _json_size(logprobs[key])
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]
            if choice.get("native_finish_reason") is not None:
                state["native_finish_reason"] = choice["native_finish_reason"]

    def _add_tool_call(self, calls: dict[int, dict], delta: dict) -> None:
        # Name and arguments as lists of pieces, joined once in result(): appending to the string
        # copied it each time, quadratic in the length of a call streamed in many small pieces.
        index = _index(delta.get("index"), len(calls))
        call = calls.get(index)
        if call is None:
            call = calls[index] = {"id": None, "name": [], "arguments": []}
            self.size += ENTRY_SIZE
        if delta.get("id"):
            call["id"] = delta["id"]
        function = delta.get("function")
        if isinstance(function, dict):
            self._add_function(call, function)

    def _add_audio(self, state: dict, delta: dict) -> None:
        audio = state.setdefault("audio", {"id": None, "data": [], "expires_at": None, "transcript": []})
        for key in ("id", "expires_at"):
            if delta.get(key) is not None:
                audio[key] = delta[key]
        for key in _AUDIO_TEXTS:
            if isinstance(delta.get(key), str):
                audio[key].append(delta[key])
                self.size += len(delta[key])

    def _add_function(self, call: dict, function: dict) -> None:
        for key in ("name", "arguments"):
            if isinstance(function.get(key), str):
                call[key].append(function[key])
                self.size += len(function[key])

    def result(self, fallback_usage: dict | None = None) -> dict:
        """The assembled completion; `fallback_usage` fills in usage the stream did not carry."""
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            content = _parts(state["content"]) if "parts" in state else "".join(state["content"]) or None
            message: dict = {"role": "assistant", "content": content}
            message.update((key, "".join(state[key])) for key in _TEXTS if key in state)
            message.update((key, state[key]) for key in _LISTS if state.get(key))
            if state["tool_calls"]:
                message["tool_calls"] = [_tool_call(state["tool_calls"][i]) for i in sorted(state["tool_calls"])]
            if "function_call" in state:
                message["function_call"] = _function(state["function_call"])
            if "audio" in state:
                message["audio"] = {**state["audio"], **{key: "".join(state["audio"][key]) for key in _AUDIO_TEXTS}}
            choice = {"index": index, "message": message, "finish_reason": state["finish_reason"]}
            if "logprobs" in state:
                choice["logprobs"] = state["logprobs"]
            if "native_finish_reason" in state:
                choice["native_finish_reason"] = state["native_finish_reason"]
            choices.append(choice)
        body = {"object": "chat.completion", **self._envelope, "choices": choices}
        usage = self._usage if self._usage is not None else fallback_usage
        if usage is not None:
            body["usage"] = usage
        return body


def _json_size(value) -> int:
    """What `value` adds to the record, as JSON. A value orjson cannot write (an integer beyond 64
    bits, nesting too deep: none in a chunk orjson parsed, but no chunk may break the stream)
    counts as an entry."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return ENTRY_SIZE


def _parts(pieces: list) -> list:
    """Content streamed as parts (and text pieces, as text parts) merged as a JSON answer has them:
    a part continuing the one before, of the same type and nothing but its payload (a text, or a
    list of parts such as Mistral's `thinking`), is joined to it."""
    parts: list = []
    for piece in pieces:
        if type(piece) is not str:
            _append_part(parts, piece)
        elif piece:  # the role chunk's "" is no part
            _append_part(parts, {"type": "text", "text": piece})
    return parts


def _append_part(parts: list, part) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    payload = part.get(kind) if isinstance(kind, str) else None
    mergeable = isinstance(payload, str | list) and part.keys() == {"type", kind}
    last = parts[-1] if parts else None
    if mergeable and isinstance(last, dict) and last.keys() == part.keys() and last["type"] == kind \
            and type(last[kind]) is type(payload):
        if isinstance(payload, str):
            last[kind] += payload  # `last` is this function's copy, never the upstream's chunk
        else:
            for inner in payload:
                _append_part(last[kind], inner)
        return
    if mergeable:
        part = {"type": kind, kind: payload if isinstance(payload, str) else []}
        for inner in payload if isinstance(payload, list) else ():
            _append_part(part[kind], inner)
    parts.append(part)


def _tool_call(pieces: dict) -> dict:
    return {"id": pieces["id"], "type": "function", "function": _function(pieces)}


def _function(pieces: dict) -> dict:
    return {"name": "".join(pieces["name"]), "arguments": "".join(pieces["arguments"])}


def _index(value, default: int) -> int:
    """Upstream chunks are only trusted to be dicts: a missing or malformed index counts as the default,
    so the log's assembly can never break the client's stream."""
    return value if type(value) is int else default
