"""Gemini `GenerateContentResponse` -> OpenAI `chat.completion`, and the SSE stream -> OpenAI chunks.

Pure dict work; tables from wire-formats.md §4.2–4.5, choices in docs/gemini.md.
"""

from __future__ import annotations

import math
import time
import uuid

import orjson
from loguru import logger

from aiproxy.errors import UpstreamStreamTruncated
from aiproxy.providers.base import system_fingerprint
from aiproxy.providers.gemini_citations import Texts, annotations
from aiproxy.providers.gemini_ids import new_tool_call_id

_CONTENT_FILTER = frozenset(
    {"SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}
    | {"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE"}
)
# OpenAI's logprob for a token too unlikely to count (its docs): the number for Gemini's -inf.
_VERY_UNLIKELY = -9999.0
# Safety ratings worth naming in a block explanation.
_NOTABLE_PROBABILITY = frozenset({"MEDIUM", "HIGH"})


def finish_reason(gemini_reason: str | None, has_tool_calls: bool) -> str:
    """OpenAI's enum for a Gemini finishReason; unknown and malformed-call reasons become `stop`."""
    if gemini_reason == "MAX_TOKENS":
        return "length"
    if gemini_reason in _CONTENT_FILTER:
        return "content_filter"
    # Only a normal stop with calls asks the client to run them (wire-formats §4.3): the calls of
    # UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS and the like failed.
    return "tool_calls" if has_tool_calls and gemini_reason in ("STOP", None) else "stop"


def usage(metadata: dict | None) -> dict:
    """OpenAI usage from usageMetadata: reasoning counts inside completion tokens, as OpenAI does."""
    metadata = metadata if isinstance(metadata, dict) else {}

    def count(field: str) -> int:  # a count Gemini did not send (or sent as no number) is 0
        value = metadata.get(field, 0)
        return value if type(value) is int else 0

    prompt = count("promptTokenCount") + count("toolUsePromptTokenCount")
    thoughts = count("thoughtsTokenCount")
    completion = count("candidatesTokenCount") + thoughts
    total = count("totalTokenCount")
    prompt_details = {"cached_tokens": count("cachedContentTokenCount")}
    audio = _modality_tokens(metadata.get("promptTokensDetails"), "AUDIO")
    if audio:  # billed above text: worth its own count, as OpenAI gives it
        prompt_details["audio_tokens"] = audio
    completion_details = {"reasoning_tokens": thoughts}
    images = _modality_tokens(metadata.get("candidatesTokensDetails"), "IMAGE")
    if images:  # generated images are billed far above text: OpenRouter's field for them
        completion_details["image_tokens"] = images
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if total == prompt + completion else prompt + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": completion_details,
    }


def _modality_tokens(details, modality: str) -> int:
    """The tokens a usage `*TokensDetails` list (`[{modality, tokenCount}]`) gives one modality."""
    entries = details if isinstance(details, list) else ()
    return sum(
        entry["tokenCount"]
        for entry in entries
        if isinstance(entry, dict) and entry.get("modality") == modality and type(entry.get("tokenCount")) is int
    )


def failure_explanation(candidate: dict) -> str | None:
    """The answer text for a candidate that ended with nothing generated for a reason that is not a
    normal stop, a limit or a filter (a malformed call, OTHER…): `stop` with "" would read as an
    answer empty on purpose, and Gemini's finishMessage, which says why, would be lost."""
    reason = candidate.get("finishReason")
    if reason in (None, "STOP", "MAX_TOKENS") or reason in _CONTENT_FILTER:
        return None
    message = candidate.get("finishMessage")
    detail = f": {message}" if message and isinstance(message, str) else "."
    return f"Gemini stopped without an answer (finishReason: {reason}){detail}"


def block_explanation(feedback: dict) -> str:
    """The answer text for a prompt Gemini refused to process (promptFeedback.blockReason)."""
    reason = feedback.get("blockReason") or "BLOCK_REASON_UNSPECIFIED"
    text = f"Gemini blocked this prompt and generated no answer (blockReason: {reason})."
    flagged = [
        f"{rating.get('category')} ({rating.get('probability')})"
        for rating in feedback.get("safetyRatings") or []
        if rating.get("blocked") or rating.get("probability") in _NOTABLE_PROBABILITY
    ]
    if flagged:
        text += " Flagged: " + ", ".join(flagged) + "."
    return text


def _tool_call(function_call: dict, signature: str | None) -> dict:
    return {
        "id": new_tool_call_id(signature, function_call.get("id")),
        "type": "function",
        "function": {
            "name": function_call.get("name", ""),
            "arguments": orjson.dumps(function_call.get("args") or {}).decode(),
        },
    }


def _logprobs(result: dict | None) -> dict | None:
    if not result:
        return None
    tops = result.get("topCandidates") or []
    content = []
    for position, chosen in enumerate(result.get("chosenCandidates") or []):
        alternatives = tops[position].get("candidates", []) if position < len(tops) else []
        content.append(
            {
                **_token_logprob(chosen),
                "top_logprobs": [_token_logprob(alternative) for alternative in alternatives],
            }
        )
    return {"content": content, "refusal": None}


def _token_logprob(candidate: dict) -> dict:
    token = candidate.get("token", "")
    return {"token": token, "logprob": _logprob(candidate.get("logProbability", 0.0)), "bytes": list(token.encode())}


def _logprob(value: float | str) -> float:
    """A float of proto3 JSON, which writes -inf (and NaN) as strings, as the number OpenAI's schema wants."""
    value = float(value)
    return value if math.isfinite(value) else _VERY_UNLIKELY


def _image(part: dict) -> dict | None:
    """An `inlineData` part as OpenRouter's image entry (a data URL), or None when it is not an image.
    Its thoughtSignature rides in the entry as Google's OpenAI endpoint carries signatures
    (`extra_content.google.thought_signature`), so a replayed image gets it back (docs/gemini.md)."""
    blob = part["inlineData"]
    mime = blob.get("mimeType") if isinstance(blob, dict) else None
    if not isinstance(mime, str) or not mime.startswith("image/") or not isinstance(blob.get("data"), str):
        logger.debug("gemini: dropping an inlineData part that is not an image ({})", mime)
        return None
    entry: dict = {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{blob['data']}"}}
    signature = part.get("thoughtSignature")
    if signature and isinstance(signature, str):
        entry["extra_content"] = {"google": {"thought_signature": signature}}
    return entry


def _parts(candidate: dict) -> list:
    return (candidate.get("content") or {}).get("parts") or []


def _split_parts(candidate: dict) -> tuple[list[str], list[dict], list[dict]]:
    """Visible text, OpenAI tool calls and images of one candidate; thought parts are dropped."""
    texts, calls, images = [], [], []
    for part in _parts(candidate):
        if "functionCall" in part:
            calls.append(_tool_call(part["functionCall"], part.get("thoughtSignature")))
        elif part.get("thought"):
            continue
        elif part.get("text"):
            texts.append(part["text"])
        elif "inlineData" in part and (image := _image(part)):
            images.append(image)
    return texts, calls, images


def _allowed_calls(calls: list[dict], sent: int, one_tool_call: bool) -> list[dict]:
    """The calls the client may get after `sent` earlier ones: all, or, when it asked for no parallel
    calls (`parallel_tool_calls: false`, which Gemini has no switch for), the answer's first only."""
    if not one_tool_call or len(calls) + sent <= 1:
        return calls
    logger.debug("gemini: parallel_tool_calls is false; dropping {} later function call(s)", len(calls) + sent - 1)
    return calls[: max(0, 1 - sent)]


def _has_citations(candidate: dict) -> bool:
    return bool(candidate.get("citationMetadata") or candidate.get("groundingMetadata"))


def _annotations(candidate: dict, before: str, added: str) -> list[dict]:
    """The `url_citation` annotations of a candidate whose visible text `added` follows `before`
    (the text earlier events of a stream gave; "" for a JSON answer)."""
    parts: dict[int, tuple[int, str]] = {}
    offset = len(before)
    for position, part in enumerate(_parts(candidate)):  # the parts _split_parts joined into `added`
        if "functionCall" not in part and not part.get("thought") and part.get("text"):
            parts[position] = (offset, part["text"])
            offset += len(part["text"])
    return annotations(candidate, Texts(before + added, parts, streamed=bool(before)))


def to_openai_response(data: dict, model: str, one_tool_call: bool = False) -> dict:
    """A `chat.completion` for a non-streaming Gemini answer; `one_tool_call` keeps only the first
    function call of each choice (the client sent `parallel_tool_calls: false`)."""
    candidates = data.get("candidates") or []
    if candidates:
        choices = [_choice(candidate, position, one_tool_call) for position, candidate in enumerate(candidates)]
        choices.sort(key=lambda choice: choice["index"])
    else:
        explanation = block_explanation(data.get("promptFeedback") or {})
        message = {"role": "assistant", "content": explanation, "refusal": None}
        choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"}]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(data.get("usageMetadata")),
        "system_fingerprint": system_fingerprint("gemini", model),
    }


def _choice(candidate: dict, position: int, one_tool_call: bool) -> dict:
    texts, calls, images = _split_parts(candidate)
    calls = _allowed_calls(calls, 0, one_tool_call)
    if not (texts or calls or images) and (explanation := failure_explanation(candidate)):
        texts = [explanation]
    message: dict = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if images:
        message["images"] = images
    if _has_citations(candidate) and (cited := _annotations(candidate, "", message["content"] or "")):
        message["annotations"] = cited
    return {
        "index": candidate.get("index", position),
        "message": message,
        "logprobs": _logprobs(candidate.get("logprobsResult")),
        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
    }


class _ChoiceState:
    __slots__ = ("tool_calls", "finished", "text", "cited", "generated")

    def __init__(self) -> None:
        self.tool_calls = 0
        self.finished = False
        self.generated = False  # any text, image or call streamed
        self.text: list[str] = []  # the content streamed so far: citations count their offsets in it
        self.cited: set[tuple] = set()  # annotations sent (Gemini may repeat its metadata in later events)

    def new_annotations(self, candidate: dict, added: str) -> list[dict]:
        before = "".join(self.text)
        fresh = []
        for annotation in _annotations(candidate, before, added):
            key = tuple(annotation["url_citation"].values())
            if key not in self.cited:
                self.cited.add(key)
                fresh.append(annotation)
        return fresh


class StreamTranslator:
    """Gemini SSE events in, OpenAI chunks out: role first, deltas, one finish chunk per choice,
    then (when the client asked) one usage chunk built from the last, cumulative usageMetadata.
    `one_tool_call` lets only the first function call of each choice through, whichever event it is in."""

    __slots__ = ("_base", "_include_usage", "_one_tool_call", "_choices", "_usage", "_feedback")

    def __init__(self, model: str, include_usage: bool, one_tool_call: bool = False) -> None:
        self._base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": system_fingerprint("gemini", model),
        }
        self._include_usage = include_usage
        self._one_tool_call = one_tool_call
        self._choices: dict[int, _ChoiceState] = {}
        self._usage: dict | None = None
        self._feedback: dict | None = None  # a promptFeedback without blockReason, before any candidate

    def feed(self, event: dict) -> list[dict]:
        """The OpenAI chunks for one Gemini event."""
        if isinstance(event.get("usageMetadata"), dict):
            self._usage = event["usageMetadata"]
        candidates = event.get("candidates")
        if not candidates:
            feedback = event.get("promptFeedback")
            if feedback and feedback.get("blockReason"):
                return self._blocked(feedback)
            if isinstance(feedback, dict):
                self._feedback = feedback
            return []
        out: list[dict] = []
        for position, candidate in enumerate(candidates):
            index = candidate.get("index", position)
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
                out.append(self._chunk(index, {"role": "assistant", "content": ""}))
            if state.finished:
                continue
            texts, calls, images = _split_parts(candidate)
            calls = _allowed_calls(calls, state.tool_calls, self._one_tool_call)
            reason = candidate.get("finishReason")
            if texts or calls or images:
                state.generated = True
            elif reason and not state.generated and (explanation := failure_explanation(candidate)):
                texts = [explanation]
            text = "".join(texts)
            cited = state.new_annotations(candidate, text) if _has_citations(candidate) else None
            if texts:
                state.text.append(text)
            if texts or images or cited:
                delta: dict = {"content": text} if texts else {}
                if images:
                    delta["images"] = images
                if cited:
                    delta["annotations"] = cited
                out.append(self._chunk(index, delta, logprobs=_logprobs(candidate.get("logprobsResult"))))
            for call in calls:
                out.append(self._chunk(index, {"tool_calls": [{"index": state.tool_calls, **call}]}))
                state.tool_calls += 1
            if reason:
                state.finished = True
                out.append(self._chunk(index, {}, finish_reason=finish_reason(reason, state.tool_calls > 0)))
        return out

    @property
    def usage(self) -> dict | None:
        """The final usage in OpenAI's shape, whether or not it was streamed."""
        return usage(self._usage) if self._usage else None

    def finish(self) -> list[dict]:
        """Called when the upstream closed the stream: the usage chunk, or an error if it was cut short.
        Feedback and no candidate at all is what a JSON answer without candidates says: a blocked prompt."""
        # _blocked records the choice it finishes, so such a stream passes the check below.
        out = self._blocked(self._feedback) if not self._choices and self._feedback is not None else []
        if not self._choices or not all(state.finished for state in self._choices.values()):
            raise UpstreamStreamTruncated("The Gemini stream ended before the answer was finished.")
        if not self._include_usage:
            return out
        return [*out, {**self._base, "choices": [], "usage": usage(self._usage)}]

    def _blocked(self, feedback: dict) -> list[dict]:
        state = self._choices[0] = _ChoiceState()
        state.finished = True
        return [
            self._chunk(0, {"role": "assistant", "content": ""}),
            self._chunk(0, {"content": block_explanation(feedback)}),
            self._chunk(0, {}, finish_reason="content_filter"),
        ]

    def _chunk(
        self, index: int, delta: dict, *, logprobs: dict | None = None, finish_reason: str | None = None
    ) -> dict:
        chunk = {
            **self._base,
            "choices": [
                {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk
