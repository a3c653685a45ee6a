"""What a request says, in two forms: text fragments for the FTS index, and a normalised
message list whose hashes thread requests into dialogs.

Text comes from every message and content part, tool-call names and arguments, legacy
`prompt`, Gemini `contents`, and the answer (choices, top-level `content`, Gemini candidates).
Records hold whatever a client or upstream sent, so every field is type-checked: text is taken
where it has the expected shape and anything else is skipped, never an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

MAX_FRAGMENT_CHARS = 20_000


def _items(value: Any) -> list | tuple:
    """`value` if it is a JSON array, else nothing to iterate."""
    return value if isinstance(value, list) else ()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part.strip())
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"].strip())
        return "\n".join(p for p in parts if p)
    return ""


def _tool_calls(message: dict) -> list[tuple[str, str]]:
    calls = []
    for call in _items(message.get("tool_calls")):
        if isinstance(call, dict):
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            calls.append((str(function.get("name") or ""), str(function.get("arguments") or "")))
    return calls


def _message_text(message: dict) -> str:
    text = _content_text(message.get("content"))
    calls = "\n".join(f"{name} {args}".strip() for name, args in _tool_calls(message))
    return f"{text}\n{calls}".strip() if calls else text


def _answer_message(response: Any) -> dict | None:
    if not isinstance(response, dict):
        return None
    for choice in _items(response.get("choices")):
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            return choice["message"]
    return None


def _spoken(request: Any, response: Any) -> list[tuple[str, str]]:
    """(role, text) of every message, prompt, content and answer, in order (texts may be empty)."""
    found: list[tuple[str, str]] = []
    if isinstance(request, dict):
        for message in _items(request.get("messages")):
            if isinstance(message, dict):
                found.append((str(message.get("role") or "user"), _message_text(message)))
        if isinstance(request.get("prompt"), str):
            found.append(("user", request["prompt"].strip()))
        for content in _items(request.get("contents")):
            if isinstance(content, dict):
                found.append(("user", _content_text(content.get("parts"))))
    if isinstance(response, dict):
        answers = [
            _message_text(choice["message"])
            for choice in _items(response.get("choices"))
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict)
        ]
        found.append(("assistant", "\n\n".join(a for a in answers if a)))
        if isinstance(response.get("content"), str):
            found.append(("assistant", response["content"].strip()))
        candidates = response.get("candidates")
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            content = candidates[0].get("content")
            if isinstance(content, dict):
                found.append(("assistant", _content_text(content.get("parts"))))
    return found


def extract_fragments(request: Any, response: Any) -> list[tuple[str, str]]:
    """(role, text) pairs to index: distinct, non-empty, each at most MAX_FRAGMENT_CHARS."""
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for role, text in _spoken(request, response):
        pair = (role, text[:MAX_FRAGMENT_CHARS])
        if pair[1] and pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def transcript(request: Any, response: Any, *, last_sent: bool = False) -> list[tuple[str, str]]:
    """(role, text) of what was said, in order and whole: repeats kept ("continue" twice), unlike the
    index's fragments. `last_sent`: of the request, only its last message (what a dialog turn added)."""
    if last_sent and isinstance(request, dict):
        for key in ("messages", "contents"):
            if isinstance(request.get(key), list) and request[key]:
                request = {key: request[key][-1:]}
                break
    said = [(role, text) for role, text in _spoken(request, response) if text]
    return said[-1:] if last_sent else said


def _canonical_arguments(arguments: str) -> str:
    """Tool-call arguments as compact JSON: clients that parse them send them back re-serialised
    (LangChain's `json.dumps`: spaces, non-ASCII escaped), not as the model wrote them."""
    try:
        return orjson.dumps(orjson.loads(arguments)).decode()
    except (orjson.JSONDecodeError, TypeError):  # not JSON, or beyond what orjson writes: as written
        return arguments


def _normalised(message: dict) -> list:
    """A message as the next turn will send it back: role, text, tool calls, tool call id."""
    return [
        str(message.get("role") or ""),
        _content_text(message.get("content")),
        [(name, _canonical_arguments(arguments)) for name, arguments in _tool_calls(message)],
        str(message.get("tool_call_id") or ""),
    ]


def _digest(messages: list[list]) -> str:
    return hashlib.sha256(orjson.dumps(messages)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ThreadHashes:
    """How a request links to the one it continues. `prefix` is its messages up to the last
    assistant turn ("" when it has none), `next` its messages plus its answer: a request
    continues another when its prefix equals the other's next. The `tail_*` pair hashes only
    the last exchange (the message before that assistant turn and the turn itself; the last
    message and the answer), which still matches when a client trims old history."""

    prefix: str | None = None
    next: str | None = None
    tail_prefix: str | None = None
    tail_next: str | None = None


def thread_hashes(request: Any, response: Any) -> ThreadHashes:
    """All None for requests without chat messages."""
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return ThreadHashes()
    sent = [m for m in request["messages"] if isinstance(m, dict)]
    if not sent:
        return ThreadHashes()
    # A trailing assistant message is a prefill for the model to continue, not a turn of the history:
    # the request threads on what precedes it, and the next turn sends prefill and answer back as one.
    prefill = sent.pop() if len(sent) > 1 and sent[-1].get("role") == "assistant" else None
    messages = [_normalised(m) for m in sent]
    last_assistant = max((i for i, m in enumerate(messages) if m[0] == "assistant"), default=-1)
    answer = _answer_message(response)
    if prefill is not None and answer is not None:
        answer = _continued(prefill, answer)
    answer_norm = _normalised(answer) if answer is not None else None
    return ThreadHashes(
        prefix=_digest(messages[: last_assistant + 1]) if last_assistant >= 0 else "",
        next=_digest([*messages, answer_norm]) if answer_norm else None,
        tail_prefix=_digest(messages[last_assistant - 1 : last_assistant + 1]) if last_assistant >= 1 else None,
        tail_next=_digest([messages[-1], answer_norm]) if answer_norm else None,
    )


def _continued(prefill: dict, answer: dict) -> dict:
    """The assistant message a prefill and the model's continuation of it make, as the client sends
    it back; an answer that already starts with the prefill is that message."""
    before, after = _joined_text(prefill.get("content")), _joined_text(answer.get("content"))
    return {"role": "assistant", "content": after if after.startswith(before) else before + after,
            "tool_calls": [*_items(prefill.get("tool_calls")), *_items(answer.get("tool_calls"))]}


def _joined_text(content: Any) -> str:
    """A message's text as written (a prefill and its continuation join without a separator)."""
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else p.get("text") if isinstance(p, dict)
                       and isinstance(p.get("text"), str) else "" for p in content)
    return content if isinstance(content, str) else ""


# Roles that set a conversation up rather than ask something of the model.
_SETUP_ROLES = frozenset({"system", "developer", "assistant"})


def holds_exchange(request: Any) -> bool:
    """Whether a chat request's history holds an earlier exchange: a message the model was asked
    (user, tool or any other role that is not system, developer or assistant) followed later by
    an assistant turn. A conversation that opens with an assistant greeting (`[system, assistant
    "How can I help?", user ...]`, as chat UIs send) holds none: nothing was asked before it."""
    if not isinstance(request, dict):
        return False
    asked = False
    messages = [m for m in _items(request.get("messages")) if isinstance(m, dict)]
    if len(messages) > 1 and messages[-1].get("role") == "assistant":  # a prefill (thread_hashes), not a turn
        messages.pop()
    for message in messages:
        role = str(message.get("role") or "")
        if role == "assistant" and asked:
            return True
        if role not in _SETUP_ROLES:
            asked = True
    return False
