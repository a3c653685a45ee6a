"""Seeded Gemini answers that are valid per Gemini's protos (proto3 JSON: camelCase, enum names,
bytes in base64, zeros left out) but awkward, for fuzzing how the gateway translates them; and an
oracle, written from docs/gemini.md, of what the client must get.

An answer has one to four candidates, each with any finish reason (every `FinishReason` name, none, or
one Gemini may add), no content, empty parts, or parts of every kind (text, thoughts with signatures,
function calls with args of every JSON type, function responses, images and other blobs, file data,
executable code and its result, video metadata), citations, grounding, logprobs; or a prompt blocked
with no candidates. Usage carries any subset of its counts and modality details. The same answer as a
stream spreads each candidate's text over events in pieces, its calls whole, its finish reason in its
last content event or one of its own, the usage in every event (running totals) or the last only.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

from aiproxy.testing.awkward_sse import _ALPHABET

FINISH_REASONS = (
    "FINISH_REASON_UNSPECIFIED", "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST",
    "PROHIBITED_CONTENT", "SPII", "MALFORMED_FUNCTION_CALL", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_OTHER", "NO_IMAGE", "IMAGE_RECITATION", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
    "SOME_FUTURE_REASON",
)
FILTERED = frozenset({"SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_OTHER", "NO_IMAGE", "IMAGE_RECITATION"})
BLOCK_REASONS = ("BLOCK_REASON_UNSPECIFIED", "SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY")
_COUNTS = ("promptTokenCount", "cachedContentTokenCount", "candidatesTokenCount", "toolUsePromptTokenCount",
           "thoughtsTokenCount", "totalTokenCount")
_DETAILS = ("promptTokensDetails", "cacheTokensDetails", "candidatesTokensDetails", "toolUsePromptTokensDetails")
_MODALITIES = ("MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "VIDEO", "AUDIO", "DOCUMENT")
_CATEGORIES = ("HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_SEXUALLY_EXPLICIT",
               "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_CIVIC_INTEGRITY")
_PROBABILITIES = ("HARM_PROBABILITY_UNSPECIFIED", "NEGLIGIBLE", "LOW", "MEDIUM", "HIGH")


@dataclass
class GeminiAnswer:
    seed: int
    body: dict  # the generateContent answer
    events: list[dict]  # the same answer as streamGenerateContent events


@dataclass
class Expected:
    """What one choice must say, by docs/gemini.md."""

    text: str | None  # message.content
    calls: list[tuple[str, dict]]  # each tool call's name and arguments
    images: list[str]  # data URLs
    finish_reason: str


def _text(rng: random.Random, most: int = 12) -> str:
    return "".join(rng.choices(_ALPHABET, k=rng.randint(1, most)))


def _b64(rng: random.Random, size: int = 12) -> str:
    return base64.b64encode(rng.randbytes(rng.randint(1, size))).decode()


def _json_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "object"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice(["", _text(rng), "\u0000", "🐍" * 3])
    if kind == "int":  # a Struct's numbers are doubles: integers up to 2**53 survive them
        return rng.choice([0, -1, 7, 2**53, -(2**31)])
    if kind == "float":
        return rng.choice([0.5, -1.25, 1e-300, 1.7976931348623157e308])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return _object(rng, depth + 1)


def _object(rng: random.Random, depth: int = 0) -> dict:
    return {rng.choice(["q", "n", "é", "a b", "", "$ref", _text(rng, 4)]): _json_value(rng, depth)
            for _ in range(rng.randint(0, 4))}


def _part(rng: random.Random, kind: str, seed: int, n: int) -> dict:
    if kind == "text":  # Gemini 3 may end with an empty text part that carries a signature
        part: dict = {"text": _text(rng) if rng.random() < 0.9 else ""}
    elif kind == "thought":
        part = {"text": _text(rng), "thought": True}
    elif kind == "call":
        part = {"functionCall": {"name": rng.choice(["get_weather", "f", "a.b-c_9", "ツール"]) + str(n)}}
        if rng.random() < 0.8:  # args is optional: absent means no arguments
            part["functionCall"]["args"] = _object(rng)
        if rng.random() < 0.3:
            part["functionCall"]["id"] = f"fc-{seed}-{n}"
    elif kind == "response":
        part = {"functionResponse": {"name": "earlier", "response": _object(rng)}}
    elif kind == "image":
        part = {"inlineData": {"mimeType": rng.choice(["image/png", "image/jpeg", "image/webp"]), "data": _b64(rng)}}
    elif kind == "blob":
        part = {"inlineData": {"mimeType": rng.choice(["audio/pcm", "application/pdf"]), "data": _b64(rng)}}
    elif kind == "file":
        part = {"fileData": {"fileUri": f"https://generativelanguage.googleapis.com/v1beta/files/f{n}"}}
        if rng.random() < 0.5:
            part["fileData"]["mimeType"] = "video/mp4"
        if rng.random() < 0.5:
            part["videoMetadata"] = {"startOffset": "1.5s", "endOffset": "10s", "fps": 2.0}
    elif kind == "code":
        part = {"executableCode": {"language": rng.choice(["PYTHON", "LANGUAGE_UNSPECIFIED"]), "code": "print(1)"}}
    else:
        part = {"codeExecutionResult": {"outcome": rng.choice(["OUTCOME_OK", "OUTCOME_FAILED"]), "output": "1\n"}}
    if rng.random() < (0.9 if kind == "thought" else 0.15):
        part["thoughtSignature"] = _b64(rng, 40)
    if rng.random() < 0.05:
        part["partMetadata"] = _object(rng)
    return part


_KINDS = ["text"] * 6 + ["thought"] * 2 + ["call"] * 3 + ["image", "blob", "file", "code", "result", "response"]


def _parts(rng: random.Random, seed: int) -> list[dict]:
    return [_part(rng, rng.choice(_KINDS), seed, n) for n in range(rng.choice([0, 1, 1, 2, 3, 5, 8]))]


def _usage(rng: random.Random) -> dict:
    usage = {field: rng.randint(1, 5000) for field in _COUNTS if rng.random() < 0.6}
    if rng.random() < 0.5 and "totalTokenCount" in usage:  # most often, Gemini's total is the sum
        usage["totalTokenCount"] = sum(usage.get(field, 0) for field in _COUNTS[:5] if field != "cachedContentTokenCount")
    for field in _DETAILS:
        if rng.random() < 0.3:
            usage[field] = [{"modality": modality, "tokenCount": rng.randint(1, 900)}
                            for modality in rng.sample(_MODALITIES, rng.randint(1, 3))]
    return usage


def _ratings(rng: random.Random) -> list[dict]:
    ratings = []
    for category in rng.sample(_CATEGORIES, rng.randint(0, 3)):
        rating = {"category": category, "probability": rng.choice(_PROBABILITIES)}
        if rng.random() < 0.2:
            rating["blocked"] = True
        ratings.append(rating)
    return ratings


def _visible_text(parts: list[dict]) -> str:
    return "".join(part["text"] for part in parts if "text" in part and not part.get("thought"))


def _span(text: str, rng: random.Random) -> dict:
    """Byte offsets of a piece of `text` (zeros left out, as proto3 JSON does)."""
    raw = text.encode()
    start = rng.randint(0, len(raw))
    end = rng.randint(start, len(raw))
    span = {key: value for key, value in (("startIndex", start), ("endIndex", end)) if value}
    return span


def _citations(rng: random.Random, text: str, candidate: dict) -> None:
    if rng.random() < 0.2:
        sources = []
        for n in range(rng.randint(1, 3)):
            source = _span(text, rng)
            if rng.random() < 0.9:
                source["uri"] = f"https://example.com/c{n}"
            if rng.random() < 0.3:
                source["license"] = "mit"
            sources.append(source)
        candidate["citationMetadata"] = {"citationSources": sources}
    if rng.random() < 0.2:
        chunks = [{"web": {"uri": f"https://example.org/g{n}", "title": f"g{n}"}} for n in range(rng.randint(0, 3))]
        supports = []
        for _ in range(rng.randint(0, 3)):
            segment = _span(text, rng)
            supports.append({"segment": segment, "groundingChunkIndices": [rng.randint(0, 3)],
                             "confidenceScores": [0.5]})
        candidate["groundingMetadata"] = {"groundingChunks": chunks, "groundingSupports": supports,
                                          "webSearchQueries": ["q"]}


def _logprobs(rng: random.Random, tokens: int) -> dict:
    def token() -> dict:
        entry = {"token": _text(rng, 3), "tokenId": rng.randint(0, 99999)}
        if rng.random() < 0.9:  # a log probability of 0 is left out; proto3 JSON writes -inf as a string
            entry["logProbability"] = "-Infinity" if rng.random() < 0.05 else -rng.random() * 20
        return entry

    chosen = [token() for _ in range(tokens)]
    return {"chosenCandidates": chosen, "topCandidates": [{"candidates": [token() for _ in range(2)]} for _ in chosen],
            "logProbabilitySum": sum(float(entry.get("logProbability", 0.0)) for entry in chosen)}


def _candidate(rng: random.Random, seed: int, index: int, count: int) -> dict:
    candidate: dict = {}
    shape = rng.random()
    parts = _parts(rng, seed)
    if shape < 0.05:
        pass  # no content at all (a filtered candidate)
    elif shape < 0.1:
        candidate["content"] = {"role": "model"}  # content without parts
    elif shape < 0.15:
        candidate["content"] = {}
    else:
        candidate["content"] = {"role": "model", "parts": parts}
    if rng.random() < 0.95:
        candidate["finishReason"] = rng.choice(("STOP",) * 6 + FINISH_REASONS)
    if rng.random() < 0.2:
        candidate["finishMessage"] = rng.choice(["Malformed function call: print(", "other", _text(rng)])
    if count > 1 or index or rng.random() < 0.8:  # `index` is optional: Gemini may leave out the first's
        candidate["index"] = index
    if rng.random() < 0.3:
        candidate["safetyRatings"] = _ratings(rng)
    if rng.random() < 0.3:
        candidate["tokenCount"] = rng.randint(1, 100)
    if rng.random() < 0.2:
        candidate["avgLogprobs"] = -rng.random()
    text = _visible_text((candidate.get("content") or {}).get("parts") or [])
    if text and rng.random() < 0.2:
        candidate["logprobsResult"] = _logprobs(rng, rng.randint(0, 4))
    if text:
        _citations(rng, text, candidate)
    if rng.random() < 0.05:
        candidate["urlContextMetadata"] = {"urlMetadata": [{"retrievedUrl": "https://example.com",
                                                            "urlRetrievalStatus": "URL_RETRIEVAL_STATUS_SUCCESS"}]}
    return candidate


def gemini_answer(seed: int) -> GeminiAnswer:
    rng = random.Random(seed)
    envelope: dict = {}
    if rng.random() < 0.8:
        envelope["modelVersion"] = rng.choice(["gemini-2.5-flash", "gemini-3-pro-preview"])
    if rng.random() < 0.8:
        envelope["responseId"] = f"resp-{seed}"
    usage = _usage(rng) if rng.random() < 0.9 else None
    if rng.random() < 0.08:  # a blocked prompt: feedback, no candidates
        feedback: dict = {"safetyRatings": _ratings(rng)}
        if rng.random() < 0.95:
            feedback["blockReason"] = rng.choice(BLOCK_REASONS)
        body = {"promptFeedback": feedback, **envelope}
        if usage:
            body["usageMetadata"] = usage
        return GeminiAnswer(seed, body, [body])
    count = rng.choice([1, 1, 1, 2, 3, 4])
    candidates = [_candidate(rng, seed, index, count) for index in range(count)]
    body = {"candidates": candidates, **envelope}
    if rng.random() < 0.1:
        body["promptFeedback"] = {"safetyRatings": _ratings(rng)}
    if usage:
        body["usageMetadata"] = usage
    return GeminiAnswer(seed, body, _events(rng, body))


def _stream_candidates(rng: random.Random, candidate: dict) -> list[dict]:
    """One candidate as the pieces of it that successive events carry."""
    parts = (candidate.get("content") or {}).get("parts")
    pieces: list[list[dict]] = []
    for part in parts or []:
        if "text" in part and len(part["text"]) > 1 and rng.random() < 0.6:  # text is streamed in pieces
            cut = rng.randint(1, len(part["text"]) - 1)
            pieces += [[{**part, "text": part["text"][:cut]}], [{**part, "text": part["text"][cut:]}]]
        elif pieces and rng.random() < 0.4:  # or several parts come in one event
            pieces[-1].append(part)
        else:
            pieces.append([part])
    extras = {key: value for key, value in candidate.items() if key not in ("content", "finishReason", "logprobsResult")}
    out = []
    for group in pieces:
        out.append({"content": {"role": "model", "parts": group}, **({"index": candidate["index"]} if "index" in candidate else {})})
    last = {**extras}
    if "content" in candidate and not parts:
        last["content"] = candidate["content"]
    if "finishReason" in candidate:
        last["finishReason"] = candidate["finishReason"]
    if out and rng.random() < 0.6:  # the finish reason (and metadata) with the last content
        out[-1].update(last)
    else:
        out.append(last)
    if "logprobsResult" in candidate:  # each token's logprob in the event with its text
        with_text = [piece for piece in out if _visible_text((piece.get("content") or {}).get("parts") or [])]
        chosen, tops = candidate["logprobsResult"]["chosenCandidates"], candidate["logprobsResult"]["topCandidates"]
        cuts = sorted(rng.randint(0, len(chosen)) for _ in range(len(with_text) - 1))
        for piece, start, end in zip(with_text, [0, *cuts], [*cuts, len(chosen)], strict=True):
            piece["logprobsResult"] = {"chosenCandidates": chosen[start:end], "topCandidates": tops[start:end]}
    return out


def _events(rng: random.Random, body: dict) -> list[dict]:
    queues = [_stream_candidates(rng, candidate) for candidate in body["candidates"]]
    events: list[dict] = []
    while any(queues):
        live = [queue for queue in queues if queue]
        together = rng.sample(live, rng.randint(1, len(live)))  # one or several candidates per event
        events.append({"candidates": [queue.pop(0) for queue in together]})
    envelope = {key: body[key] for key in ("modelVersion", "responseId") if key in body}
    usage = body.get("usageMetadata")
    running = rng.random() < 0.5
    for number, event in enumerate(events, start=1):
        event.update(envelope)
        if usage and (running or number == len(events)):
            event["usageMetadata"] = usage if number == len(events) else {
                key: value for key, value in usage.items() if key in ("promptTokenCount", "totalTokenCount")}
    if "promptFeedback" in body:
        events[0]["promptFeedback"] = body["promptFeedback"]
    if usage and rng.random() < 0.2:  # the final totals in an event of their own
        events.append({"usageMetadata": usage, **envelope})
    return events


def expected_choices(body: dict) -> list[Expected]:
    """The choices docs/gemini.md says a client gets for `body`, in index order."""
    candidates = body.get("candidates")
    if not candidates:
        return [Expected(None, [], [], "content_filter")]
    out = []
    for _position, candidate in sorted(enumerate(candidates), key=lambda item: item[1].get("index", item[0])):
        parts = (candidate.get("content") or {}).get("parts") or []
        text = _visible_text(parts)
        calls = [(part["functionCall"]["name"], part["functionCall"].get("args", {}))
                 for part in parts if "functionCall" in part]
        images = [f"data:{part['inlineData']['mimeType']};base64,{part['inlineData']['data']}" for part in parts
                  if "inlineData" in part and part["inlineData"]["mimeType"].startswith("image/")
                  and not part.get("thought")]
        reason = candidate.get("finishReason")
        if reason == "MAX_TOKENS":
            finish = "length"
        elif reason in FILTERED:
            finish = "content_filter"
        else:
            finish = "tool_calls" if calls and reason in ("STOP", None) else "stop"
        content: str | None = text
        if not text and calls:
            content = None
        elif not (text or calls or images) and reason not in (None, "STOP", "MAX_TOKENS") and reason not in FILTERED:
            content = f"Gemini stopped without an answer (finishReason: {reason})"  # the explanation's start
        out.append(Expected(content, calls, images, finish))
    return out


def expected_usage(usage: dict | None) -> dict:
    usage = usage or {}
    prompt = usage.get("promptTokenCount", 0) + usage.get("toolUsePromptTokenCount", 0)
    completion = usage.get("candidatesTokenCount", 0) + usage.get("thoughtsTokenCount", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "cached_tokens": usage.get("cachedContentTokenCount", 0), "reasoning_tokens": usage.get("thoughtsTokenCount", 0)}
