"""Seeded upstream event streams that are valid but awkward, for fuzzing how the gateway reads them;
a reference reader and assembler to judge what it made of them.

An OpenAI/OpenRouter stream carries n choices of text and parallel tool calls, their deltas
interleaved by choice and by call, a usage chunk, sometimes OpenRouter's mid-stream error chunk,
then `[DONE]` (with text after it, or after its marker). A Gemini stream carries candidates of text
and whole function calls with cumulative usage, and no end marker. Both are framed awkwardly, as the
SSE spec (WHATWG HTML §9.2.6) allows: LF, CRLF and lone-CR line ends mixed in one stream, `data:`
with and without its space, events split over several `data:` lines, a byte order mark first,
empty events, events of other fields only, long events, and (OpenAI's only: Gemini sends none)
comments and `event:`/`id:`/`retry:` lines; the body is cut into reads anywhere, inside a
character or a CRLF as well.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from aiohttp import web

from aiproxy.providers.gemini_response import StreamTranslator

BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile("\r\n|\n|\r")
# Text pieces: multi-byte characters (cut across reads), JSON escapes, U+2028, combining marks.
_ALPHABET = ["a", "b", " ", "é", "日本", "🐍", "\n", '"', "\\", "\u2028", "e\u0301", "ก\u0e34", "\t", "{", ":"]
_COMMENTS = ["OPENROUTER PROCESSING", "", "keep-alive", "ping: 1"]
_OTHER_FIELDS = ["event: message", "id: 42", "id", "retry: 3000", "retry", "x-unknown: field", "event"]


def whatwg_events(body: bytes) -> list[str]:
    """The data of each event an EventSource dispatches for `body`, by the spec's algorithm: UTF-8
    decoded (a leading BOM dropped), lines ended by CRLF, LF or CR, a blank line dispatching the
    `data` values gathered (each plus LF, the last LF removed) unless there are none; an event
    the stream ends before its blank line is not dispatched."""
    text = body.decode("utf-8", "replace").removeprefix("\ufeff")
    *lines, _unterminated = _LINE_END.split(text)
    events, data = [], ""
    for line in lines:
        if line == "":
            if data:
                events.append(data.removesuffix("\n"))
            data = ""
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "data":
                data += value.removeprefix(" ") + "\n"
    return events


def reference_completion(chunks: list[dict]) -> dict:
    """The chat.completion the generated chunks amount to (their fields only): per choice the
    content and each tool call's pieces joined, the last finish_reason; the last usage."""
    head = chunks[0] if chunks else {}
    body = {"object": "chat.completion", **{k: head[k] for k in ("id", "created", "model", "system_fingerprint", "provider")
                                            if k in head}}
    choices: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            state = choices.setdefault(choice["index"], {"content": "", "calls": {}, "finish_reason": None})
            delta = choice.get("delta") or {}
            state["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                pieces = state["calls"].setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                pieces["id"] = call.get("id") or pieces["id"]
                pieces["name"] += call.get("function", {}).get("name") or ""
                pieces["arguments"] += call.get("function", {}).get("arguments") or ""
            state["finish_reason"] = choice.get("finish_reason") or state["finish_reason"]
        if chunk.get("usage"):
            body["usage"] = chunk["usage"]
    body["choices"] = []
    for index, state in sorted(choices.items()):
        message = {"role": "assistant", "content": state["content"] or None}
        if state["calls"]:
            message["tool_calls"] = [{"id": call["id"], "type": "function",
                                      "function": {"name": call["name"], "arguments": call["arguments"]}}
                                     for _, call in sorted(state["calls"].items())]
        body["choices"].append({"index": index, "message": message, "finish_reason": state["finish_reason"]})
    usage = body.pop("usage", None)
    return {**body, "usage": usage} if usage else body


def openai_expected(body: bytes) -> tuple[list[dict], dict | None]:
    """The chunks an OpenAI stream carries as the reference reader reads it (the events before the
    first data starting with [DONE], the OpenAI SDK's end), and the `error` of a last chunk holding one."""
    datas = whatwg_events(body)
    end = next(i for i, data in enumerate([*datas, "[DONE]"]) if data.startswith("[DONE]"))
    chunks = [json.loads(data) for data in datas[:end]]
    return (chunks[:-1], chunks[-1]["error"]) if chunks and "error" in chunks[-1] else (chunks, None)


def gemini_expected(body: bytes) -> list[dict]:
    """The OpenAI chunks of a Gemini stream as the reference reader reads it (usage asked for)."""
    translator = StreamTranslator("gemini-2.5-flash", include_usage=True)
    chunks = [chunk for data in whatwg_events(body) for chunk in translator.feed(json.loads(data))]
    return chunks + translator.finish()


def without_fresh_ids(answers: list[dict]) -> list[dict]:
    """Chunks or completions without what each Gemini translation makes anew: its id and time, and
    the tool calls' ids."""
    answers = json.loads(json.dumps(answers))
    for answer in answers:
        answer.update(id="ID", created=0)
        for choice in answer["choices"]:
            for call in choice.get("delta", choice.get("message")).get("tool_calls") or ():
                call["id"] = "CALL"
    return answers


@dataclass
class AwkwardStream:
    seed: int
    writes: list[bytes]  # the body as the fake upstream writes it
    events: list[dict]  # the events it carries, in order (OpenAI: those before [DONE], the last
    # sometimes OpenRouter's error chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self.writes)


@dataclass
class EventStreamWrites:
    """A fake upstream's reply: a 200 event stream written as these pieces, one write each, bytes as
    they are (any framing, or none)."""

    writes: list[bytes]


async def write_event_stream(request: web.Request, reply: EventStreamWrites) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for piece in reply.writes:
        await response.write(piece)
    await response.write_eof()
    return response


def _text(rng: random.Random, long: bool = False) -> str:
    if long:
        return "".join(rng.choices(_ALPHABET, k=rng.randint(5_000, 40_000)))
    return "".join(rng.choices(_ALPHABET, k=rng.randint(0, 12)))


def _pieces(rng: random.Random, text: str) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 4)))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _interleave(rng: random.Random, queues: list[list]) -> list:
    """The items of all queues, each queue's in its order, the queues shuffled together."""
    queues = [list(q) for q in queues if q]
    out = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


def openai_stream(seed: int) -> AwkwardStream:
    rng = random.Random(seed)
    base = {"id": f"gen-{seed}", "object": "chat.completion.chunk", "created": 1700000000 + seed,
            "model": "openai/gpt-4o", "system_fingerprint": "fp_fuzz"}
    if rng.random() < 0.3:
        base["provider"] = "OpenAI"
    if rng.random() < 0.5:
        base["usage"] = None  # as with include_usage: every chunk but the last carries a null usage

    def chunk(index: int, delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    per_choice = []
    for index in range(rng.choice([1, 1, 2, 3])):
        queue = [chunk(index, {"content": piece}) for piece in _pieces(rng, _text(rng, rng.random() < 0.05))]
        calls = []
        for position in range(rng.choice([0, 0, 1, 2, 3])):
            arguments = json.dumps({"q": _text(rng), "n": rng.randint(0, 9)}, ensure_ascii=rng.random() < 0.5)
            first, *rest = _pieces(rng, arguments)
            call = [{"index": position, "id": f"call_{seed}_{index}_{position}", "type": "function",
                     "function": {"name": f"tool_{position}", "arguments": first}}]
            calls.append(call + [{"index": position, "function": {"arguments": piece}} for piece in rest])
        queue += [chunk(index, {"tool_calls": [delta]}) for delta in _interleave(rng, calls)]
        finish = "tool_calls" if calls else rng.choice(["stop", "length"])
        per_choice.append([chunk(index, {"role": "assistant", "content": ""}), *queue, chunk(index, {}, finish)])
    events = _interleave(rng, per_choice)
    usage = {"prompt_tokens": 7, "completion_tokens": len(events), "total_tokens": 7 + len(events)}
    events.append({**base, "choices": [], "usage": usage})
    failed = rng.random() < 0.15
    if failed:  # OpenRouter's error after tokens: one chunk with `error` and finish_reason "error"
        events = events[:rng.randint(1, len(events) - 1)]
        events.append({**base, "error": {"code": rng.choice([429, 502]), "message": "Provider disconnected"},
                       "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})
    payloads = [_json(rng, event) for event in events]
    done = not failed or rng.random() < 0.5
    if done:
        payloads.append(rng.choice(["[DONE]", "[DONE]", "[DONE] ", "[DONE] and more"]))
    body = _frame(rng, payloads, extras=True)
    if done and rng.random() < 0.3:  # what follows [DONE] is no part of the stream
        body += rng.choice([b"\n", b": bye\n\n", b'data: {"after": "done"}\n\n', b"data: [DONE]\n\n"])
    return AwkwardStream(seed, _reads(rng, body), events)


def gemini_stream(seed: int) -> AwkwardStream:
    rng = random.Random(seed)
    count = rng.choice([1, 1, 2])
    per_candidate = []
    for index in range(count):
        parts = [[{"text": piece}] for piece in _pieces(rng, _text(rng, rng.random() < 0.05))]
        parts += [[{"functionCall": {"name": f"tool_{n}", "args": {"q": _text(rng)}}}] for n in range(rng.choice([0, 0, 1, 2]))]
        parts = parts or [[{"text": ""}]]
        candidates = [{"content": {"role": "model", "parts": p}, "index": index} for p in parts]
        candidates[-1]["finishReason"] = "STOP"
        per_candidate.append(candidates)
    events = []
    for produced, candidate in enumerate(_interleave(rng, per_candidate), start=1):
        events.append({"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": f"r{seed}",
                       "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": produced,
                                         "totalTokenCount": 4 + produced}})
    body = _frame(rng, [_json(rng, event) for event in events], extras=False)
    return AwkwardStream(seed, _reads(rng, body), events)


def _json(rng: random.Random, value: dict) -> str:
    """Compact or indented (then several `data:` lines), escaped to ASCII or not."""
    return json.dumps(value, indent=rng.choice([None, None, 0, 2]), ensure_ascii=rng.random() < 0.3)


def _frame(rng: random.Random, payloads: list[str], extras: bool) -> bytes:
    """The payloads as SSE events; `extras`: with comments and other fields between and inside them."""
    lines: list[str] = []
    for payload in payloads:
        if rng.random() < 0.2:  # empty events: blank lines, or fields that dispatch nothing
            lines += [""] * rng.randint(1, 3) if not extras or rng.random() < 0.5 else [rng.choice(_OTHER_FIELDS), ""]
        if extras and rng.random() < 0.2:
            lines += [": " + rng.choice(_COMMENTS), ""]
        for value in payload.split("\n"):
            if extras and rng.random() < 0.1 and payload[0] == "{":  # a bare `data` adds JSON whitespace
                lines.append(rng.choice([":" + rng.choice(_COMMENTS), "data", *_OTHER_FIELDS]))
            space = " " if value.startswith(" ") or rng.random() < 0.7 else ""
            lines.append(f"data:{space}{value}")
        lines.append("")
    out, previous = [], ""
    for line in lines:
        # A lone CR then an empty line's LF would read as one CRLF: that blank line would vanish.
        end = rng.choice(["\r", "\r\n"] if previous == "\r" and not line else ["\n", "\n", "\r\n", "\r"])
        out.append(line + end)
        previous = end
    body = "".join(out).encode()
    return BOM + body if rng.random() < 0.2 else body


def _reads(rng: random.Random, body: bytes) -> list[bytes]:
    """`body` cut where the network might: a byte at a time, in small or large pieces, or whole."""
    modes = ["bytes", "small", "large", "whole"] if len(body) < 1500 else ["small", "large"] if len(body) < 8192 else ["large"]
    mode = rng.choice(modes)
    if mode == "bytes":
        return [body[i:i + 1] for i in range(len(body))]
    if mode == "whole":
        return [body]
    most = 16 if mode == "small" else 8192
    reads, start = [], 0
    while start < len(body):
        size = rng.randint(1, most)
        reads.append(body[start:start + size])
        start += size
    return reads
