"""Seeded hostile configurations through the real `aiproxy serve` (the loaders alone take many more
in test/unit/core/test_config_fuzz.py): the gateway serves exactly the routes the rules make of its
config.yml (GET /v1/models, chat calls to the built-in mock), or exits 2 at once with one stderr line
naming the file or setting. A failure names its seed: `hostile_config.config_case(seed)`."""

from __future__ import annotations

import httpx
import pytest

from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess, refused_start
from aiproxy.testing.hostile_config import config_case

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
_CASES = [config_case(seed) for seed in fuzz_seeds(0, 60)]  # the pool each kind's first few come from
SERVED = [case.seed for case in _CASES if case.routes and any(p == "mock" for p, _ in case.routes.values())][:3]
REFUSED = ([case.seed for case in _CASES if ": *l8" in str(case.text)][:1]
           + [case.seed for case in _CASES if case.routes is None and ": *l8" not in str(case.text)][:2])


def _one_line_refusal(result, what: str, names: str) -> None:
    assert result.returncode == 2, f"{what}: exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, f"{what}: {result.stderr[-2000:]}"
    assert result.stderr.startswith("aiproxy: configuration error: ") and names in result.stderr, what


@pytest.mark.parametrize("seed", SERVED)
def test_a_served_config_routes_as_the_rules_say(tmp_path, seed):
    case = config_case(seed)
    gateway = GatewayProcess(tmp_path)
    (tmp_path / "config.yml").write_text(case.text, encoding="utf-8")
    with gateway:
        listed = httpx.get(f"{gateway.base_url}/models").json()["data"]
        assert [model["id"] for model in listed] == [key for key in case.routes if not set("*?[") & set(key)]
        for alias, (provider, model) in case.routes.items():
            if provider != "mock" or set("*?[") & set(alias):
                continue
            answer = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, timeout=10,
                                json={"model": alias, "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, f"{seed_label(seed)}: {alias!r}: {answer.text}"
            record = gateway.wait_for_record(answer.headers["x-request-id"])
            assert (record["provider"], record["model_mapped"]) == (provider, model), f"{seed_label(seed)}: {alias!r}"


@pytest.mark.parametrize("seed", REFUSED)
def test_a_refused_config_stops_start_up_in_one_line_naming_it(tmp_path, seed):
    case = config_case(seed)
    gateway = GatewayProcess(tmp_path)
    config = tmp_path / "config.yml"
    config.write_bytes(case.text if isinstance(case.text, bytes) else case.text.encode("utf-8"))
    _one_line_refusal(refused_start(gateway, tmp_path, 15, f"config_case({seed})"), seed_label(seed), str(config))


@pytest.mark.parametrize("env", [
    {"REQUEST_BODY_TIMEOUT_SECONDS": "1e308"}, {"PROVIDERS": "5"}, {"PROVIDERS__MOCK": "1"}, {"PORT": "@int abc"},
    {"MAX_BODY_BYTES": "9" * 5000}, {"PROVIDERS__OPENROUTER__BASE_URL": "http://upstream.test:99999/api/v1"},
])
def test_a_hostile_setting_stops_start_up_in_one_line_naming_it(tmp_path, env):
    gateway = GatewayProcess(tmp_path, env=env)
    (name,) = env
    _one_line_refusal(refused_start(gateway, tmp_path, 15, str(env)[:200]), str(env), name)
