"""aiproxy.routing: alias and pattern resolution, the first-colon split, and config-file errors."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from aiproxy.config import ConfigError
from aiproxy.errors import ModelNotFound
from aiproxy.routing import ModelRouter

REPO = Path(__file__).resolve().parents[3]
PROVIDERS = {"openrouter", "gemini", "openai", "local", "mock"}


def router_from(tmp_path: Path, yaml_text: str, providers: set[str] = PROVIDERS) -> ModelRouter:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return ModelRouter.from_file(path, providers)


def router_of(mappings: dict[str, str], tmp_path: Path) -> ModelRouter:
    lines = "".join(f'  "{k}": "{v}"\n' for k, v in mappings.items())
    return router_from(tmp_path, "model_mappings:\n" + lines)


def test_exact_alias(tmp_path):
    router = router_of({"gpt-4o": "openrouter:openai/gpt-4o", "mock": "mock:echo"}, tmp_path)
    route = router.resolve("gpt-4o")
    assert (route.alias, route.provider, route.model) == ("gpt-4o", "openrouter", "openai/gpt-4o")
    assert router.resolve("mock").provider == "mock"


def test_case_insensitive_exact_match_after_exact(tmp_path):
    router = router_of({"GPT-4o": "openrouter:openai/gpt-4o", "gpt-4O": "openai:gpt-4o"}, tmp_path)
    assert router.resolve("gpt-4O").provider == "openai"  # exact spelling wins
    assert router.resolve("GPT-4o").provider == "openrouter"
    assert router.resolve("gpt-4o").alias == "GPT-4o"  # no exact match: the first case-folded alias


def test_exact_alias_beats_a_matching_pattern(tmp_path):
    router = router_of({"gemini-*": "gemini:gemini-2.0-flash-001", "gemini-2.5-pro": "openrouter:google/gemini-2.5-pro"},
                       tmp_path)
    assert router.resolve("gemini-2.5-pro").provider == "openrouter"
    assert router.resolve("gemini-1.5").provider == "gemini"


def test_case_insensitive_alias_beats_a_matching_pattern(tmp_path):
    router = router_of({"Claude-*": "openai:x", "claude-opus": "openrouter:anthropic/claude-opus"}, tmp_path)
    assert router.resolve("Claude-Opus").provider == "openrouter"


def test_patterns_match_case_insensitively_like_aliases(tmp_path):
    router = router_of({"gemini-*": "gemini:gemini-2.0-flash-001", "gpt-4": "openrouter:openai/gpt-4"}, tmp_path)
    assert router.resolve("GEMINI-1.5-PRO").provider == "gemini"
    assert router.resolve("GPT-4").provider == "openrouter"


def test_most_specific_pattern_wins_whatever_the_file_order(tmp_path):
    mappings = {
        "*": "openrouter:fallback",
        "gpt-*": "openrouter:gpt-any",
        "gpt-4*": "openrouter:gpt-4-any",
        "gpt-4o-*": "openrouter:gpt-4o-any",
        "gpt-4o-?ini": "openrouter:gpt-4o-mini",
    }
    expectations = {
        "gpt-4o-mini": "gpt-4o-mini",
        "gpt-4o-2024": "gpt-4o-any",
        "gpt-4-turbo": "gpt-4-any",
        "gpt-3.5": "gpt-any",
        "llama": "fallback",
    }
    for order in itertools.permutations(mappings):
        router = router_of({k: mappings[k] for k in order}, tmp_path)
        for model, expected in expectations.items():
            assert router.resolve(model).model == expected, (order, model)


def test_star_always_comes_last_even_when_first_in_the_file(tmp_path):
    router = router_of({"*": "openrouter:deepseek/deepseek-chat-v3.1:free", "qwen*": "openrouter:qwen/q"}, tmp_path)
    assert router.resolve("qwen3").model == "qwen/q"
    route = router.resolve("anything at all")
    assert route.alias == "*" and route.model == "deepseek/deepseek-chat-v3.1:free"


def test_character_classes_count_as_pattern_characters(tmp_path):
    router = router_of({"model-[ab]": "openai:ab", "model-*": "openai:any"}, tmp_path)
    assert router.resolve("model-a").model == "ab"
    assert router.resolve("model-c").model == "any"


def test_patterns_are_anchored(tmp_path):
    router = router_of({"gpt-*": "openai:x"}, tmp_path)
    with pytest.raises(ModelNotFound):
        router.resolve("my-gpt-4")


def test_split_is_on_the_first_colon(tmp_path):
    router = router_of({"ds": "openrouter:deepseek/x:free", "weird": "openai:a:b:c"}, tmp_path)
    route = router.resolve("ds")
    assert (route.provider, route.model) == ("openrouter", "deepseek/x:free")
    assert router.resolve("weird").model == "a:b:c"


def test_provider_name_is_case_insensitive_and_trimmed(tmp_path):
    router = router_of({"x": " OpenRouter : vendor/model "}, tmp_path)
    route = router.resolve("x")
    assert (route.provider, route.model) == ("openrouter", "vendor/model")


def test_no_match_is_model_not_found_404(tmp_path):
    router = router_of({"gpt-4o": "openrouter:openai/gpt-4o"}, tmp_path)
    with pytest.raises(ModelNotFound) as info:
        router.resolve("gpt-5-ultra")
    error = info.value
    assert error.http_status == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert "gpt-5-ultra" in error.message
    assert error.to_body()["error"]["code"] == "model_not_found"


def test_duplicate_keys_are_a_config_error_naming_key_and_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        router_from(tmp_path, """\
            model_mappings:
              "gpt-4o": "openrouter:openai/gpt-4o"
              "mock": "mock:echo"
              "gpt-4o": "openai:gpt-4o"
            """)
    message = str(info.value)
    assert "'gpt-4o'" in message
    assert "line 4" in message


def test_duplicate_unquoted_keys_are_found_too(tmp_path):
    with pytest.raises(ConfigError, match=r"'mock'.*line 3"):
        router_from(tmp_path, "model_mappings:\n  mock: mock:echo\n  mock: mock:tools\n")


def test_unknown_provider_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        router_of({"x": "anthropic:claude"}, tmp_path)
    assert "'anthropic'" in str(info.value) and "'x'" in str(info.value)


@pytest.mark.parametrize("text", ['model_mappings:\n  "a": "mock:echo"\n  "a": "mock:tools"\n',
                                  'model_mappings:\n  "a": "anthropic:claude"\n', 'model_mappings:\n  "a": ""\n'])
def test_a_bad_entry_names_the_file(tmp_path, text):
    # As the file's other errors do: CONFIG_PATH may be found beside the settings file, not where
    # the operator looked, and a duplicate or unknown provider named only the key.
    with pytest.raises(ConfigError) as info:
        router_from(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'config.yml'}: ")


def test_value_without_a_provider_is_an_openrouter_model_as_in_the_seed(tmp_path):
    # The seed's config.yml format: "gpt-4*": "openai/gpt-4" routes to OpenRouter. Such a file must
    # keep working, not stop start-up.
    router = router_of({"gpt-4": "openai/gpt-4", "mistral-small": " mistralai/mistral-small ", "n": "42"}, tmp_path)
    route = router.resolve("gpt-4")
    assert (route.alias, route.provider, route.model) == ("gpt-4", "openrouter", "openai/gpt-4")
    assert router.resolve("mistral-small").model == "mistralai/mistral-small"
    assert (router.resolve("n").provider, router.resolve("n").model) == ("openrouter", "42")
    assert [r.provider for r in router.aliases] == ["openrouter"] * 3  # /v1/models: owned_by openrouter


def test_unprefixed_value_with_a_colon_names_the_fix(tmp_path):
    # The seed read this as provider "deepseek/deepseek-chat-v3.1" (a 500 at request time).
    with pytest.raises(ConfigError, match="write 'openrouter:deepseek/deepseek-chat-v3.1:free'"):
        router_of({"ds": "deepseek/deepseek-chat-v3.1:free"}, tmp_path)


def test_value_without_a_provider_needs_the_openrouter_provider(tmp_path):
    with pytest.raises(ConfigError, match="'openrouter' is not configured"):
        router_from(tmp_path, 'model_mappings:\n  "x": "openai/gpt-4"\n', providers={"mock"})


@pytest.mark.parametrize("value", ["", "  ", "openai:", "openai:   "])
def test_malformed_targets_are_config_errors(tmp_path, value):
    with pytest.raises(ConfigError):
        router_of({"x": value}, tmp_path)


def test_non_string_target_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        router_from(tmp_path, "model_mappings:\n  x: [openai, gpt]\n")


def test_missing_file_invalid_yaml_and_wrong_shape(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ModelRouter.from_file(tmp_path / "nope.yml", PROVIDERS)
    with pytest.raises(ConfigError, match="invalid YAML"):
        router_from(tmp_path, "model_mappings: {unclosed\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        router_from(tmp_path, "model_mappings:\n  - a\n")


def test_invalid_yaml_says_what_is_wrong_and_where(tmp_path):
    # The first line of PyYAML's message is only its context ("while parsing a flow sequence").
    with pytest.raises(ConfigError) as info:
        router_from(tmp_path, 'model_mappings:\n  "mock": "mock:echo"\n  "x": [1, 2\n')
    message = str(info.value)
    assert "expected ',' or ']'" in message and "line 4" in message and "\n" not in message


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "config.yml"
    path.write_bytes(b'model_mappings:\n  "caf\xe9": "mock:echo"\n')  # latin-1: start-up ended in a traceback
    with pytest.raises(ConfigError, match="not UTF-8"):
        ModelRouter.from_file(path, PROVIDERS)


@pytest.mark.parametrize("text", ["- mock: mock:echo\n", "model_mapping:\n  mock: mock:echo\n", "mock: mock:echo\n"])
def test_a_file_without_model_mappings_is_a_config_error(tmp_path, text):
    # It served with no model at all: every request a 404, the typo never named.
    with pytest.raises(ConfigError, match="model_mappings"):
        router_from(tmp_path, text)


def test_empty_file_maps_nothing(tmp_path):
    router = router_from(tmp_path, "")
    assert router.aliases == ()
    with pytest.raises(ModelNotFound):
        router.resolve("anything")


def test_shipped_config_loads_and_lists_its_aliases_but_not_patterns():
    router = ModelRouter.from_file(REPO / "configs" / "config.yml", PROVIDERS)
    names = [route.alias for route in router.aliases]
    assert len(names) == len(set(names))
    assert {"mock", "mock-echo", "mock-tools", "gpt-4o", "deepseek-free"} <= set(names)
    assert not any(ch in name for name in names for ch in "*?[")
    assert router.resolve("gemini-anything").provider == "gemini"  # the shipped pattern
    assert router.resolve("deepseek-free").model == "deepseek/deepseek-chat-v3.1:free"
    assert router.resolve("mock-tools").model == "tools"
    with pytest.raises(ModelNotFound):  # the shipped file has no catch-all
        router.resolve("definitely-not-a-model")


@pytest.mark.parametrize("key", ["3.10", "yes", "off", "~", "null", "1:30", "0x10", "1_000", "2024-01-01", ".nan"])
def test_a_key_is_the_alias_as_written_not_what_yaml_1_1_reads_in_it(tmp_path, key):
    router = router_from(tmp_path, f"model_mappings:\n  {key}: mock:echo\n")
    assert [route.alias for route in router.aliases] == [key]
    assert router.resolve(key).model == "echo"


@pytest.mark.parametrize("text, problem", [
    ("model_mappings:\n  ? [a, b]\n  : mock:echo\n", "the key at line 2 is a list"),
    ("model_mappings:\n  ? {a: b}\n  : mock:echo\n", "the key at line 2 is a mapping"),
    ("model_mappings:\n  x: 2024-13-45\n", "cannot read the value at line 2: month must be in 1..12"),
    ("model_mappings:\n  x: " + "9" * 5000 + "\n", "cannot read the value at line 2"),
    ("model_mappings: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("model_mappings:\n  '': mock:echo\n", "model mapping key '' is empty"),
    ("model_mappings:\n  ' ': mock:echo\n", "model mapping key ' ' is empty"),
    ("model_mappings:\n  <<: 5\n", "the merge key '<<' at line 2 needs a mapping"),
])
def test_keys_and_values_yaml_cannot_make_an_alias_of_are_one_line_naming_the_file(tmp_path, text, problem):
    with pytest.raises(ConfigError) as info:
        router_from(tmp_path, text)
    assert str(info.value).startswith(f"{tmp_path / 'config.yml'}: ") and problem in str(info.value)
    assert "\n" not in str(info.value)


def test_merge_keys_bring_their_entries_in_as_the_seeds_safe_load_did(tmp_path):
    router = router_from(tmp_path, """\
        shared: &shared {a: "mock:echo", b: "mock:echo"}
        other: &other {b: "mock:tools", c: "mock:tools"}
        model_mappings:
          <<: [*shared, *other]
          a: "mock:tools"
        """)
    assert {route.alias: route.model for route in router.aliases} == {"a": "tools", "b": "echo", "c": "tools"}


def test_an_alias_to_a_billion_element_list_is_refused_without_printing_it(tmp_path):
    anchors = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    with pytest.raises(ConfigError, match=r"'laughs': the value must be a 'provider:model' string, not a list$"):
        router_from(tmp_path, anchors + "model_mappings:\n  laughs: *a8\n")


def test_a_huge_key_is_quoted_clipped(tmp_path):
    with pytest.raises(ConfigError) as info:
        router_from(tmp_path, f"model_mappings:\n  ? {'k' * 100_000}\n  : nowhere:x\n")  # an explicit key: no 1024 limit
    assert len(str(info.value)) < 1000


def test_a_character_class_counts_as_one_unknown_character_not_its_members(tmp_path):
    router = router_of({"gpt-[0-9]*": "openai:digit", "gpt-4o*": "openai:4o"}, tmp_path)
    assert router.resolve("gpt-4o-mini").model == "4o"  # 6 literal characters against 4 (not 8)
    assert router.resolve("gpt-5").model == "digit"
