"""Seeded hostile chat requests: valid bodies with one to three known fields, at any depth, replaced
by a value of another JSON type or a hostile one (numbers past int64, strings of digits, deep nesting,
data: URLs that are not base64, lists of non-objects...), as a confused or malicious client sends them.

The bodies start as a rich request every route can translate (`base_request`: each message role, part
kind, tools, tool_choice, response_format, sampling knobs) or as a lossless-fuzz request
(aiproxy.testing.chatfuzz), so a mutation reaches deep into the Gemini translation instead of being
refused at the first message. Plain `random.Random(seed)`: a failure is reproduced by its seed.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from aiproxy.testing.chatfuzz import ChatFuzzer


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


HOSTILE: list[Any] = [
    None, True, False, 0, -1, 2, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 10**30, -(10**30),
    0.5, -0.0, 1e308, -1e308, 5e-324, 2.5, "", " ", "0", "5", "-1", "2.5", "true", "null", "{}", "[]",
    "\u0000", "🐍", "a" * 70_000, [], {}, [1, 2], [None], [[]], ["a", 1], [{}], [{"type": 5}],
    {"": None}, {"type": 5}, {"type": "text", "text": 7}, {"$ref": "#"}, {"anyOf": [True, False]},
    {"type": ["object", "null"], "properties": []}, {"url": 5}, {"name": ["x"]},
    "data:", "data:,", "data:;base64,", "data:image/png;base64,!!!not base64!!!", "data:image/png;base64,A",
    "data:application/pdf;base64," + "QUFB" * 30_000, "data:text/plain,plain", "http://", "ftp://x.test/a",
    "javascript:alert(1)", _nested(40, 1), _nested(300, None), {str(i): i for i in range(300)},
]

# Fields worth setting even where the base body has none: top-level parameters, message fields, part fields.
TOP_FIELDS = [
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "top_k", "n", "seed",
    "max_tokens", "max_completion_tokens", "stop", "presence_penalty", "frequency_penalty", "logprobs",
    "top_logprobs", "logit_bias", "metadata", "user", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "reasoning_effort", "reasoning", "modalities", "web_search_options", "functions",
    "function_call", "moderation", "audio", "prediction", "store", "service_tier",
]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio", "images"]
PART_FIELDS = ["type", "text", "image_url", "input_audio", "file", "refusal"]

PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def base_request(model: str, r: random.Random) -> dict:
    """A request that every route translates: every role, part kind and parameter the Gemini
    translation reads (docs/gemini.md), in one of the shapes each may take."""
    file_data = r.choice(["data:application/pdf;base64,JVBERi0x", "https://x.test/report", "JVBERi0x"])
    tool_result = r.choice(['{"found": true}', [{"type": "text", "text": "found"}, {"type": "text", "text": "it"}]])
    tool_choice = r.choice(["auto", {"type": "function", "function": {"name": "lookup"}},
                            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
                                {"type": "function", "function": {"name": "lookup"}}]}}])
    reasoning = r.choice([{"reasoning_effort": "low"}, {"reasoning": {"effort": "high", "max_tokens": 100}}])
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": file_data}},
            ]},
            {"role": "assistant", "content": "Calling.", "images": [
                {"type": "image_url", "image_url": {"url": PNG}, "extra_content": {"google": {"thought_signature": "c2ln"}}},
            ], "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": tool_result},
            {"role": "user", "content": "And now?", "name": "bob"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": "Look up a word.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        }}],
        "tool_choice": tool_choice,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "strict": True,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        }},
        "temperature": 0.5, "top_p": 0.9, "n": 1, "seed": 7, "max_tokens": 50, "stop": ["END"],
        "presence_penalty": 0.1, "frequency_penalty": 0.1, **reasoning,
        "modalities": ["text"], "metadata": {"k": "v"}, "user": "u1", "web_search_options": {},
    }


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value inside `value` (dict keys and list indices), the root excluded."""
    out = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return out
    for key, item in items:
        out.append((*path, key))
        out.extend(_paths(item, (*path, key)))
    return out


def _set(body: dict, path: tuple, value: Any) -> None:
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


class HostileFuzzer:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.r = random.Random(seed)

    def value(self) -> Any:
        """A hostile value; sometimes a list or object of them."""
        if self.r.random() < 0.15:
            return [self.r.choice(HOSTILE) for _ in range(self.r.randrange(1, 4))]
        if self.r.random() < 0.1:
            return {self.r.choice(PART_FIELDS + MESSAGE_FIELDS): self.r.choice(HOSTILE)}
        return copy.deepcopy(self.r.choice(HOSTILE))

    def request(self, model: str) -> tuple[dict, list[str]]:
        """A mutated request for `model` and what was changed (for the failure message)."""
        r = self.r
        body = base_request(model, r) if r.random() < 0.7 else ChatFuzzer(self.seed).request()
        body["model"] = model
        body["stream"] = r.random() < 0.3
        changes = []
        for _ in range(r.choice([1, 1, 1, 2, 3])):
            path = self._path(body)
            if path is None:
                continue
            value = self.value()
            _set(body, path, value)
            changes.append(f"{'.'.join(map(str, path))} = {repr(value)[:60]}")
        return body, changes

    def _path(self, body: dict) -> tuple | None:
        """A path to replace: an existing one (deep ones as likely as shallow), or a known field added."""
        r = self.r
        roll = r.random()
        if roll < 0.55:
            # A field name first, then one of its places: `text` or `mode`, found once or twice in a
            # body of a hundred paths, is then as likely to be picked as `messages` is.
            by_name: dict[str, list[tuple]] = {}
            for path in _paths(body):
                by_name.setdefault(str(path[-1]) if isinstance(path[-1], str) else "[]", []).append(path)
            return r.choice(by_name[r.choice(sorted(by_name))]) if by_name else None
        if roll < 0.75:
            return (r.choice(TOP_FIELDS),)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        index = r.randrange(len(messages))
        message = messages[index]
        if not isinstance(message, dict):
            return ("messages", index)
        content = message.get("content")
        if roll < 0.9 or not isinstance(content, list) or not content or not isinstance(content[0], dict):
            return ("messages", index, r.choice(MESSAGE_FIELDS))
        part = r.randrange(len(content))
        return ("messages", index, "content", part, r.choice(PART_FIELDS)) if isinstance(content[part], dict) else \
            ("messages", index, "content", part)
