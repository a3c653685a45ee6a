"""Model mapping: client model name -> (provider, upstream model), from config.yml.

Resolution (design.md §3): exact alias, then case-insensitive exact alias, then the most
specific matching shell pattern (most literal characters; file order breaks ties), `*` last.
Patterns match case-insensitively too, so `GEMINI-2.0` finds `gemini-*` as `GPT-4` finds `gpt-4`.
The mapping value splits on its first colon: `openrouter:deepseek/x:free`; a value without one
is an OpenRouter model (`"gpt-4": "openai/gpt-4"`), as in the seed.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from aiproxy.config import ConfigError, read_config_text
from aiproxy.errors import MAX_QUOTED_BYTES, ModelNotFound, clip

_PATTERN_CHARS = set("*?[")
# A mapping value without a colon names an OpenRouter model, as in the seed ("openai/gpt-4").
DEFAULT_PROVIDER = "openrouter"


@dataclass(frozen=True, slots=True)
class Route:
    alias: str  # the mapping key that matched (an alias or a pattern)
    provider: str
    model: str  # upstream model id

    @property
    def is_pattern(self) -> bool:
        return bool(_PATTERN_CHARS & set(self.alias))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: what is wrong and where (its first line is only the context,
    e.g. 'while parsing a flow sequence')."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys instead of silently keeping the last."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # a date like 2024-13-45, an integer of 5000 digits
            raise ConfigError(f"cannot read the value at line {node.start_mark.line + 1}: {exc}") from None


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _quoted(text: str) -> str:
    """An alias as an error message quotes it: a key of a megabyte must not make a line of one."""
    return repr(clip(text, MAX_QUOTED_BYTES))


def _key_text(node: yaml.Node) -> str:
    """A key as written: YAML 1.1 would read `3.10`, `yes`, `1:30` and `~` as 3.1, True, 90 and None,
    and the gateway then served models named '3.1', 'True', '90' and 'None'."""
    if not isinstance(node, yaml.ScalarNode):
        kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
        raise ConfigError(f"the key at line {node.start_mark.line + 1} is a {kind}, not a name")
    return node.value


def _merged(loader: _UniqueKeyLoader, node: yaml.Node) -> dict:
    """The entries a merge key (`<<: *base`, `<<: [*a, *b]`) brings in, as the seed's safe_load took
    them: of several mappings, the earlier one's entry wins."""
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    merged: dict = {}
    for source in reversed(sources):
        if not isinstance(source, yaml.MappingNode):
            raise ConfigError(f"the merge key '<<' at line {node.start_mark.line + 1} needs a mapping or a list of"
                              " mappings")
        merged.update(loader.construct_object(source, deep=True))
    return merged


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = _key_text(key_node)
        if key in mapping:
            raise ConfigError(
                f"duplicate model mapping key {_quoted(key)} at line {key_node.start_mark.line + 1}; keep only one entry"
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    merged = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged = {**_merged(loader, value_node), **merged}  # an earlier merge key wins too
    return {**merged, **mapping} if merged else mapping  # the mapping's own entries override merged ones


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _described(value: object) -> str:
    """A mapping value that is no string, named without printing it whole (an alias to a billion-element
    list would take minutes and gigabytes to print)."""
    if isinstance(value, list | dict):
        return f"a {'list' if isinstance(value, list) else 'mapping'}"
    return clip(repr(value), MAX_QUOTED_BYTES)


def _split_target(alias: str, target: object, providers: set[str]) -> Route:
    if not alias.strip():
        raise ConfigError(f"model mapping key {alias!r} is empty: name the alias clients send")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"model mapping {_quoted(alias)}: the value must be a 'provider:model' string, not {_described(target)}")
    if ":" not in target:  # the seed's shorthand: a bare upstream id is an OpenRouter model
        provider, model = DEFAULT_PROVIDER, target.strip()
    else:
        provider, model = (part.strip() for part in target.split(":", 1))
        provider = provider.lower()
    if providers and provider not in providers:
        hint = f"; to send {_quoted(target)} to OpenRouter write 'openrouter:{clip(target, MAX_QUOTED_BYTES)}'" if "/" in provider else ""
        raise ConfigError(
            f"model mapping {_quoted(alias)}: provider {_quoted(provider)} is not configured (known: {', '.join(sorted(providers))})"
            + hint
        )
    if not model:
        raise ConfigError(f"model mapping {_quoted(alias)}: empty model after {provider!r}:")
    return Route(alias=alias, provider=provider, model=model)


# A character class as fnmatch reads it (after `[` and an optional `!`, a first `]` is a member; an
# unclosed `[` is a literal one).
_CHARACTER_CLASS = re.compile(r"\[(?:!?\][^\]]*|![^\]]+|[^!\]][^\]]*)\]")


def _specificity(pattern: str) -> int:
    """Literal characters: a class like `[0-9]` stands for one character, not five literal ones
    (`gpt-[0-9]*` beat `gpt-4o*` for gpt-4o-mini, counting 8 to 6)."""
    return sum(1 for ch in _CHARACTER_CLASS.sub("", pattern) if ch not in _PATTERN_CHARS)


class ModelRouter:
    def __init__(self, mappings: dict[str, Route]) -> None:
        self._exact: dict[str, Route] = {}
        self._folded: dict[str, Route] = {}
        patterns: list[tuple[int, int, re.Pattern[str], Route]] = []
        for order, (key, route) in enumerate(mappings.items()):
            if route.is_pattern:
                regex = re.compile(fnmatch.translate(key), re.IGNORECASE)  # the same on every OS
                patterns.append((-_specificity(key), order, regex, route))
            else:
                self._exact[key] = route
                self._folded.setdefault(key.casefold(), route)
        # Most literal characters first; `*` has none, so it always comes last.
        self._patterns = [(regex, route) for _, _, regex, route in sorted(patterns, key=lambda p: p[:2])]
        self.aliases: tuple[Route, ...] = tuple(self._exact.values())

    @classmethod
    def from_file(cls, path: str | Path, providers: set[str]) -> ModelRouter:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model mapping file {path} not found; set CONFIG_PATH")
        try:
            data = yaml.load(read_config_text(path), Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(exc)}") from None
        except ConfigError as exc:  # a duplicate key, a value YAML cannot read
            raise ConfigError(f"{path}: {exc}") from None
        except RecursionError:  # PyYAML's parser recurses once per level: `[[[[…` thousands deep
            raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected 'model_mappings:' at the top, found a {type(data).__name__}")
        if "model_mappings" not in data and data:  # a misspelt key would leave every model unmapped
            found = clip(", ".join(map(repr, data)), MAX_QUOTED_BYTES)
            raise ConfigError(f"{path}: no 'model_mappings:' key (found {found})")
        mappings = data.get("model_mappings")
        if mappings is None:
            mappings = {}
        if not isinstance(mappings, dict):
            raise ConfigError(f"{path}: model_mappings must be a mapping of alias to 'provider:model'")
        try:
            return cls({str(k): _split_target(str(k), v, providers) for k, v in mappings.items()})
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def resolve(self, model: str) -> Route:
        route = self._exact.get(model) or self._folded.get(model.casefold())
        if route is not None:
            return route
        for regex, route in self._patterns:
            if regex.match(model):
                return route
        raise ModelNotFound(
            f"The model `{clip(model, MAX_QUOTED_BYTES)}` does not exist or is not mapped by this gateway. GET /v1/models lists the models.",
            param="model",
        )
