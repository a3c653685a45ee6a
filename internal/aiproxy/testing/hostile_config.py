"""Seeded hostile config.yml files for fuzzing the model mapping loader, each with what the routing
rules (design.md §3) make of it: the routes it must serve, or that start-up must refuse it.
`config_case(seed)` rebuilds a case; nothing here needs the network."""

from __future__ import annotations

import fnmatch
import json
import random
from dataclasses import dataclass, field

PROVIDERS = frozenset({"openrouter", "gemini", "openai", "local", "mock"})
_PATTERN_CHARS = set("*?[")
# Written plain, YAML 1.1 reads these as numbers, booleans, null, dates, sexagesimals: each is an alias as written.
_PLAIN_KEYS = ("3.10", "yes", "No", "off", "ON", "~", "null", "1:30", "0x10", "0o17", "1_000", "2024-01-01",
               "2024-13-45", ".nan", "-.inf", "1e3", "gpt-4o", "Model_1", "deepseek-v3.1", "a.b", "x+y")
_NAME_PARTS = ("gpt", "GPT", "claude", "mock", "é", "ß", "İ", "Ω", "中文", "😀", "\u200b", " ", "\t", "-", ".",
               "(", ")", "+", "\\", "$", "^", "|", "{", "}", ":", "#", "'", '"', "/", "4o", "v3")
_PATTERN_PARTS = ("*", "?", "[a-c]", "[!x]", "[z-a]", "[", "]", ".", "(", "+", "\\", "gpt", "-", "x", "4")
# (text as written in the file, the route it means, or None when start-up must refuse it)
_VALUES: tuple[tuple[str, tuple[str, str] | None], ...] = (
    ('"mock:echo"', ("mock", "echo")), ('"mock:tools"', ("mock", "tools")), ("mock:echo", ("mock", "echo")),
    ('" MOCK : echo "', ("mock", "echo")), ('"openrouter:deepseek/x:free"', ("openrouter", "deepseek/x:free")),
    ('"openai/gpt-4"', ("openrouter", "openai/gpt-4")), ('"local:llama3"', ("local", "llama3")),
    ('"nowhere:x"', None), ('"mock:"', None), ('":echo"', None), ('""', None), ('"  "', None), ("5", None),
    ("yes", None), ("~", None), ("", None), ("[mock, echo]", None), ("{mock: echo}", None), ("2024-13-45", None),
    ("3.10", None), ('"deepseek/x:free"', None), ("*l8", None), ("9" * 5000, None),
)


@dataclass
class ConfigCase:
    seed: int
    text: str | bytes
    # alias or pattern -> (provider, model) in file order, when the file is one the gateway must serve
    routes: dict[str, tuple[str, str]] | None = field(default=None)
    probes: list[str] = field(default_factory=list)  # model names to resolve against reference_route


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_NAME_PARTS) for _ in range(rng.randint(1, 5)))


def _pattern(rng: random.Random) -> str:
    parts = [rng.choice(_PATTERN_PARTS) for _ in range(rng.randint(1, 4))]
    return "".join(parts) if _PATTERN_CHARS & set("".join(parts)) else "".join(parts) + "*"


def _laughs(depth: int = 9) -> str:
    """Anchors of 10**depth elements, were aliases expanded."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


def config_case(seed: int) -> ConfigCase:
    rng = random.Random(seed)
    kind = rng.random()
    if kind < 0.12:
        return _broken_file(seed, rng)
    entries: list[tuple[str, str, tuple[str, str] | None]] = []  # (key as written, key's text, route)
    for _ in range(rng.randint(0, 8)):
        roll = rng.random()
        if roll < 0.3:
            key = rng.choice(_PLAIN_KEYS)
            written = key
        else:
            key = _pattern(rng) if roll < 0.55 else ("*" if roll < 0.6 else _name(rng))
            written = json.dumps(key, ensure_ascii=False)
        if rng.random() < 0.1 and entries:  # a duplicate, maybe written another way (quoted)
            key = rng.choice(entries)[1]
            written = json.dumps(key, ensure_ascii=False)
        value, route = rng.choice(_VALUES) if rng.random() < 0.3 else rng.choice(_VALUES[:7])
        entries.append((f"{written}: {value}", key, route))
    lines = [line for line, _, _ in entries]
    refused = (any(route is None for *_, route in entries) or len({key for _, key, _ in entries}) < len(entries)
               or any(not key.strip() for _, key, _ in entries))
    text = (_laughs() if rng.random() < 0.2 else "") + "model_mappings:\n" + "".join(f"  {line}\n" for line in lines)
    if not lines and rng.random() < 0.5:
        text = "model_mappings:\n"
    if rng.random() < 0.1:
        text = "\ufeff" + text  # a byte order mark changes nothing
    names = [key for _, key, _ in entries]
    probes = names + [p.upper() for p in names] + [_name(rng) for _ in range(5)] + ["gpt-4o", "GPT-x", "a", ""]
    routes = None if refused else {key: route for _, key, route in entries}
    return ConfigCase(seed, text, routes, probes)


def _broken_file(seed: int, rng: random.Random) -> ConfigCase:
    """A file start-up must refuse whatever its mappings: broken YAML, the wrong shape, bytes not UTF-8."""
    text: str | bytes = rng.choice((
        "- model_mappings\n", "42\n", "just text\n", "model_mappings: [a, b]\n", "model_mapping:\n  a: mock:echo\n",
        "model_mappings:\n\ta: mock:echo\n", "model_mappings: {unclosed\n", "model_mappings:\n  a: b: c\n",
        "model_mappings: &a\n  m: *a\n", "model_mappings: " + "[" * 3000 + "]" * 3000 + "\n",
        "model_mappings:\n  ? [a]\n  : mock:echo\n", "model_mappings:\n  <<: 5\n", "model_mappings: !!set {a}\n",
        "model_mappings:\n  a: !!python/object:os.system {}\n", "model_mappings:\n  a: mock:echo\n---\nb: 1\n",
        "x:\n  y: 1\n  y: 2\nmodel_mappings:\n  a: mock:echo\n",
    ))
    if rng.random() < 0.3:
        text = b"model_mappings:\n  \"caf\xe9\": \"mock:echo\"\n"
    return ConfigCase(seed, text, None)


def reference_route(routes: dict[str, tuple[str, str]], model: str) -> tuple[str, str] | None:
    """The routing rules, read from design.md alone: exact alias, then case-insensitive alias (the
    first in the file), then the matching pattern with most literal characters (file order between
    equals), `*` last; None: 404."""
    aliases = {key: route for key, route in routes.items() if not _PATTERN_CHARS & set(key)}
    if model in aliases:
        return aliases[model]
    folded = [route for key, route in aliases.items() if key.casefold() == model.casefold()]
    if folded:
        return folded[0]
    patterns = [(key, route) for key, route in routes.items() if _PATTERN_CHARS & set(key)]
    matching = [(key, route) for key, route in patterns
                if fnmatch.fnmatchcase(model.lower(), key.lower()) or fnmatch.fnmatchcase(model.upper(), key.upper())]
    if not matching:
        return None
    best = max(_literal_characters(key) for key, _ in matching)
    return next(route for key, route in matching if _literal_characters(key) == best)


def _literal_characters(pattern: str) -> int:
    """Characters a name must have as written, scanning as fnmatch.translate does: none for `*`, `?`
    or a closed `[...]` class (whose first `]`, after an optional `!`, is a member)."""
    count, i = 0, 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "[":
            j = i + (pattern[i:i + 1] == "!")
            j += pattern[j:j + 1] == "]"
            end = pattern.find("]", j)
            if end != -1:
                i = end + 1
                continue
        count += ch not in _PATTERN_CHARS
    return count
