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


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise ConfigError(
                f"duplicate model mapping key {key!r} at line {key_node.start_mark.line + 1}; keep only one entry"
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _split_target(alias: str, target: object, providers: set[str]) -> Route:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"model mapping {alias!r}: value {target!r} must look like 'provider:model'")
    if ":" not in target:  # the seed's shorthand: a bare upstream id is an OpenRouter model
        provider, model = DEFAULT_PROVIDER, target.strip()
    else:
        provider, model = (part.strip() for part in target.split(":", 1))
        provider = provider.lower()
    if providers and provider not in providers:
        hint = f"; to send {target!r} to OpenRouter write 'openrouter:{target}'" if "/" in provider else ""
        raise ConfigError(
            f"model mapping {alias!r}: provider {provider!r} is not configured (known: {', '.join(sorted(providers))})"
            + hint
        )
    if not model:
        raise ConfigError(f"model mapping {alias!r}: empty model after {provider!r}:")
    return Route(alias=alias, provider=provider, model=model)


def _specificity(pattern: str) -> int:
    return sum(1 for ch in pattern if ch not in _PATTERN_CHARS)


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
        except ConfigError as exc:  # a duplicate key
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected 'model_mappings:' at the top, found a {type(data).__name__}")
        if "model_mappings" not in data and data:  # a misspelt key would leave every model unmapped
            raise ConfigError(f"{path}: no 'model_mappings:' key (found {', '.join(map(repr, map(str, data)))})")
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
