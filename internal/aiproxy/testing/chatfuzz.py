"""Seeded random OpenAI chat bodies (requests, answers, stream chunks) for differential tests of the
lossless path: every field the proto types, in its usual and its unusual shapes, with vendor keys
at every level holding awkward JSON. Plain `random.Random(seed)`, so a failing case is reproduced
by its seed alone.

The bodies stay inside what the gateway forwards (a model, a non-empty list of messages with known
roles, `stream` a boolean) and inside what JSON carries between parsers: integers in
[-2**63, 2**64), finite floats, strings without lone surrogates. `expected_after_proto` says what
a lossless trip through the proto gives back.
"""

from __future__ import annotations

import random
from typing import Any

from aiproxy.chat.validate import ROLES

# Doubles in the proto: a whole number held there comes back as a JSON integer (docs/architecture.md).
REQUEST_DOUBLES = ("temperature", "top_p", "presence_penalty", "frequency_penalty")

INTS = [0, 1, -1, 7, 2**31, 2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1]
FLOATS = [0.1, 1e-7, 1e308, -0.0, 0.0, 1.0, 5e-324, -2.5, 0.7, 1e16, 2.0**53, -1e-300, 123456.789]
STRINGS = [
    "", "hi", "🐍𝄞 astral", "שלום عربى mixed RTL ‏", "\u0000", "nul\u0000inside", "e\u0301 combining",
    "\u2028\u2029 line separators", "\ufeffBOM", "\x85\x1c\x1d\x1e", "\r\n\r\n", "data: [DONE]\n\n",
    '"quotes" \\ {braces} [brackets]', "\U0001F600 emoji", "a" * 300, "{\"looks\": \"like json\"}", "1e400",
]
# Keys a vendor may send; some look like the proto's own names or their camelCase forms.
VENDOR_KEYS = [
    "maxTokens", "extra_json", "extraJson", "content_text", "content_parts", "content_null", "stop_text",
    "stop_list", "tool_choice_mode", "tool_choice_object", "parameters_json", "schema_json", "cache_control",
    "provider", "reasoning", "x-vendor", "__proto__", "", " ", "🐍", "null", "items", "index", "type", "0",
]


class ChatFuzzer:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.r = random.Random(seed)

    # --- JSON values ------------------------------------------------------------------------

    def _chance(self, p: float) -> bool:
        return self.r.random() < p

    def scalar(self) -> Any:
        kind = self.r.randrange(6)
        if kind == 0:
            return self.r.choice([None, True, False])
        if kind == 1:
            return self.r.choice(INTS)
        if kind == 2:
            return self.r.choice(FLOATS)
        if kind == 3:
            return self.r.uniform(-1e6, 1e6)
        return self.text()

    def text(self) -> str:
        if self._chance(0.5):
            return self.r.choice(STRINGS)
        return "".join(self.r.choice(STRINGS[:12]) for _ in range(self.r.randrange(1, 4)))

    def value(self, depth: int = 0) -> Any:
        """Any JSON value, nested a few levels at most; empty containers are common."""
        if depth >= 3 or self._chance(0.6):
            return self.scalar()
        if self._chance(0.5):
            return [self.value(depth + 1) for _ in range(self.r.randrange(4))]
        return {self.key(): self.value(depth + 1) for _ in range(self.r.randrange(4))}

    def key(self) -> str:
        return self.r.choice(VENDOR_KEYS) if self._chance(0.7) else self.text()[:20]

    def vendored(self, obj: dict, known: tuple[str, ...] = ()) -> dict:
        """obj with, sometimes, vendor keys (never overwriting a key obj already has)."""
        while self._chance(0.35):
            key = self.key()
            if key not in obj and key not in known:
                obj[key] = self.value()
        return obj

    def odd(self, good: Any) -> Any:
        """Mostly `good`; sometimes a value of another type, null or an empty container, as clients send."""
        return good if self._chance(0.85) else self.r.choice([None, [], {}, "", 0, 1.5, True, self.value()])

    # --- requests ---------------------------------------------------------------------------

    def part(self) -> dict:
        kind = self.r.choice(["text", "image_url", "input_audio", "file", "refusal", "vendor_part"])
        part: dict = {"type": kind}
        if kind in ("text", "refusal"):
            part[kind] = self.odd(self.text())
        elif kind == "image_url":
            part["image_url"] = self.odd(self.vendored({"url": self.r.choice(["https://x.test/a.png", "data:image/png;base64,AAAA", ""]),
                                                        **({"detail": self.r.choice(["auto", "low", "high"])} if self._chance(0.5) else {})}))
        elif kind == "input_audio":
            part["input_audio"] = self.odd(self.vendored({"data": "UklGRg==", "format": self.r.choice(["wav", "mp3"])}))
        elif kind == "file":
            file = self.r.choice([{"filename": self.text(), "file_data": "data:application/pdf;base64,JVBE"},
                                  {"file_id": "file-abc"}, {}])
            part["file"] = self.odd(self.vendored(file))
        else:
            part["data"] = self.value()
        return self.vendored(part)

    def tool_call(self, streamed: bool = False) -> dict:
        call: dict = {}
        if streamed or self._chance(0.2):
            call["index"] = self.odd(self.r.choice([0, 1, 2**63 - 1]))
        call.update({"id": self.odd(f"call_{self.r.randrange(1000)}"), "type": "function"})
        function = {"name": self.odd(self.text()), "arguments": self.odd(self.r.choice(['{"x": 1}', "", "{", self.text()]))}
        call["function"] = self.odd(self.vendored(function))
        return self.vendored(call)

    def message(self, role: str | None = None, delta: bool = False) -> dict:
        role = role or self.r.choice(sorted(ROLES))
        message: dict = {} if delta and self._chance(0.5) else {"role": role}
        if role == "assistant" and self._chance(0.4):
            message["content"] = None
            message["tool_calls"] = self.odd([self.tool_call(streamed=delta) for _ in range(self.r.randrange(3))])
        elif self._chance(0.5):
            message["content"] = self.text()
        else:
            message["content"] = self.odd([self.part() for _ in range(self.r.randrange(4))])
        if self._chance(0.2):
            message["name"] = self.odd(self.text())
        if role in ("tool", "function") and self._chance(0.7):
            message["tool_call_id"] = self.odd("call_1")
        if role == "assistant" and self._chance(0.2):
            message["refusal"] = self.r.choice([None, self.text()])
        return self.vendored(message, ("role",))

    def tool(self) -> dict:
        function: dict = {"name": self.odd(self.text())}
        if self._chance(0.5):
            function["description"] = self.odd(self.text())
        if self._chance(0.7):
            function["parameters"] = self.r.choice([
                {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 1.0}}},
                {}, None, self.value()])
        if self._chance(0.3):
            function["strict"] = self.odd(self.r.choice([True, False]))
        return self.vendored({"type": "function", "function": self.odd(self.vendored(function))})

    def request(self) -> dict:
        r = self.r
        body: dict = {"model": "gpt-test", "messages": [self.message() for _ in range(r.randrange(1, 5))]}
        optional = {
            "temperature": lambda: r.choice([0, 1, 2, 0.7, 1.0, -0.0, 5e-324, 1e-7, 2**53 + 1, 1e308]),
            "top_p": lambda: r.choice([0.1, 1, 1.0, 0.999999]),
            "presence_penalty": lambda: r.choice([-2, -2.0, 0.5, 1e-7]),
            "frequency_penalty": lambda: r.choice([2, 0.0, -0.0, 1.25]),
            "max_tokens": lambda: r.choice(INTS),
            "max_completion_tokens": lambda: r.choice(INTS),
            "stop": lambda: r.choice(["\n\n", "", ["END", "STOP"], [self.text()], []]),
            "n": lambda: r.choice([1, 2, 2**63 - 1]),
            "seed": lambda: r.choice(INTS),
            "logprobs": lambda: r.choice([True, False]),
            "top_logprobs": lambda: r.choice([0, 5, 20]),
            "tools": lambda: [self.tool() for _ in range(r.randrange(3))],
            "tool_choice": lambda: r.choice(["none", "auto", "required",
                                             self.vendored({"type": "function", "function": self.vendored({"name": "f"})}),
                                             {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}]),
            "parallel_tool_calls": lambda: r.choice([True, False]),
            "response_format": lambda: self.vendored(r.choice([
                {"type": "text"}, {"type": "json_object"},
                {"type": "json_schema", "json_schema": self.vendored(
                    {"name": "x", "schema": self.value(), "strict": r.choice([True, False])})}])),
            "stream": lambda: r.choice([True, False]),
            "stream_options": lambda: self.vendored({"include_usage": r.choice([True, False])}),
            "user": lambda: self.text(),
            "metadata": lambda: {self.text()[:16]: self.text() for _ in range(r.randrange(4))},
            "logit_bias": lambda: {"50256": -100, "1234": r.choice([5, 5.5, -0.0])},
        }
        for key, make in optional.items():
            if self._chance(0.3):
                body[key] = make() if key == "stream" else self.odd(make())
        return self.vendored(body, ("model", "messages", "stream"))

    # --- answers ----------------------------------------------------------------------------

    def usage(self) -> dict:
        usage = {"prompt_tokens": self.odd(self.r.choice(INTS[:8])), "completion_tokens": self.r.choice([0, 3, 10]),
                 "total_tokens": self.odd(13)}
        if self._chance(0.4):
            usage["prompt_tokens_details"] = self.odd(self.vendored({"cached_tokens": 0, "audio_tokens": self.odd(0)}))
        if self._chance(0.4):
            usage["completion_tokens_details"] = self.odd(self.vendored(
                {"reasoning_tokens": 5, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": self.odd(1)}))
        if self._chance(0.3):
            usage["cost"] = self.r.choice([0, 0.0, 1.0, 2.5e-7, 5e-324])
        return self.vendored(usage)

    def _envelope(self, kind: str) -> dict:
        body = {"id": self.odd("chatcmpl-1"), "object": kind, "created": self.odd(self.r.choice([1700000000, 2**63 - 1, 0])),
                "model": self.odd("upstream/model")}
        if self._chance(0.5):
            body["system_fingerprint"] = self.r.choice(["fp_1", None, ""])
        if self._chance(0.2):
            body["service_tier"] = self.odd("default")
        return body

    def completion(self) -> dict:
        body = self._envelope("chat.completion")
        body["choices"] = [self.vendored({"index": self.odd(i), "message": self.message("assistant"),
                                          "finish_reason": self.r.choice(["stop", "length", "tool_calls", None]),
                                          "logprobs": self.r.choice([None, self.value()])})
                           for i in range(self.r.randrange(1, 3))]
        if self._chance(0.8):
            body["usage"] = self.odd(self.usage())
        return self.vendored(body, ("choices",))

    def chunk(self, finish: bool) -> dict:
        body = self._envelope("chat.completion.chunk")
        body["choices"] = [self.vendored({"index": 0, "delta": self.message("assistant", delta=True),
                                          "finish_reason": "stop" if finish else None,
                                          **({"logprobs": self.r.choice([None, self.value()])} if self._chance(0.5) else {})})]
        if self._chance(0.3):
            body["usage"] = self.r.choice([None, self.usage()])
        return self.vendored(body, ("choices", "error"))

    def chunks(self) -> list[dict]:
        """A stream's chunks: its last one finishes choice 0; a usage chunk (choices: []) may follow."""
        chunks = [self.chunk(finish=False) for _ in range(self.r.randrange(3))] + [self.chunk(finish=True)]
        if self._chance(0.4):
            chunks.append(self.vendored({**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage()},
                                        ("choices", "error")))
        return chunks


def expected_after_proto(body: dict, request: bool) -> dict:
    """What a lossless trip gives back: the same JSON, except that a whole-number double in a typed
    request double (temperature & co.) comes back as an integer (1.0 and -0.0 as 1 and 0), as
    protojson does: JSON does not tell them apart and no upstream does."""
    if not request:
        return body
    out = dict(body)
    for key in REQUEST_DOUBLES:
        value = out.get(key)
        if type(value) is float and value.is_integer() and abs(value) < 2**53:
            out[key] = int(value)
    return out
