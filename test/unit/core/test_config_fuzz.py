"""Seeded fuzzing of config.yml (aiproxy.testing.hostile_config): YAML 1.1 scalars as keys, patterns
with regex characters, unicode and whitespace in names, duplicates, unknown providers, values of every
type, a billion-laughs anchor, broken files. Each loads into exactly the routes the rules make of it,
or is refused in one line naming the file; nothing else. A failure names its seed:
`hostile_config.config_case(seed)` rebuilds the file."""

from __future__ import annotations

import time

import pytest

from aiproxy.config import ConfigError
from aiproxy.errors import ModelNotFound
from aiproxy.routing import ModelRouter
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label, seeds_from_environment
from aiproxy.testing.hostile_config import PROVIDERS, config_case, reference_route

SEEDS = fuzz_seeds(0, 250)
ANCHOR_SEEDS = fuzz_seeds(0, 40)  # the first three with a billion-laughs anchor
ENV_SEEDS = fuzz_seeds(0, 150)


def test_every_config_loads_as_the_rules_say_or_is_refused_in_one_line(tmp_path):
    path = tmp_path / "config.yml"
    served = refused = 0
    for seed in SEEDS:
        case = config_case(seed)
        path.write_bytes(case.text if isinstance(case.text, bytes) else case.text.encode("utf-8"))
        started = time.monotonic()
        try:
            router = ModelRouter.from_file(path, set(PROVIDERS))
        except ConfigError as exc:
            message = str(exc)
            assert case.routes is None, f"{seed_label(seed)}: refused a config it must serve: {message}"
            assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 2000, seed_label(seed)
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 -- any other exception is the defect this test looks for
            pytest.fail(f"{seed_label(seed)}: {type(exc).__name__}: {exc}"[:2000])
        finally:
            assert time.monotonic() - started < 2, f"{seed_label(seed)}: took {time.monotonic() - started:.1f} s"
        assert case.routes is not None, f"{seed_label(seed)}: served a config it must refuse"
        assert [route.alias for route in router.aliases] == [
            key for key in case.routes if not set("*?[") & set(key)], seed_label(seed)
        for probe in case.probes:
            expected = reference_route(case.routes, probe)
            try:
                got = router.resolve(probe)
            except ModelNotFound:
                got = None
            assert (got and (got.provider, got.model)) == expected, f"{seed_label(seed)}: {probe!r}"
        served += 1
    assert seeds_from_environment() or (served > 60 and refused > 60)  # both sides are really exercised


@pytest.mark.parametrize("seed", [seed for seed in ANCHOR_SEEDS if "&l8" in str(config_case(seed).text)][:3])
def test_billion_laughs_anchors_are_never_expanded(tmp_path, seed):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = tmp_path / "config.yml"
    path.write_text(config_case(seed).text, encoding="utf-8")
    try:
        ModelRouter.from_file(path, set(PROVIDERS))
    except ConfigError:
        pass
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB


SETTINGS = ("HOST", "PORT", "GRPC_HOST", "GRPC_PORT", "WORKERS", "API_KEYS", "ADMIN_API_KEYS", "MODELS_REQUIRE_AUTH",
            "KEY_HASH_SECRET", "CORS_ALLOW_ORIGINS", "MAX_BODY_BYTES", "REQUEST_BODY_TIMEOUT_SECONDS",
            "SHUTDOWN_GRACE_SECONDS", "EVENT_LOOP", "LOG_LEVEL", "LOG_DIR", "ENABLE_FILE_LOGGING", "REQUEST_LOG_ENABLED",
            "REQUEST_LOG_RETENTION", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "HSTS_MAX_AGE",
            "LOGDB_ENABLED", "LOGDB_FTS_ENABLED", "LOGDB_PARTITION_GRANULARITY", "LOGDB_DIR", "LOGDB_MEMORY_MB",
            "LOGDB_BATCH_ROWS", "LOGDB_BATCH_KB", "LOGDB_IMPORT_PARALLELISM", "LOGDB_DIALOG_WINDOW",
            "LOGDB_DIALOG_LOOKBACK_DAYS", "LOGDB_LIVE_INTERVAL_S", "LOGDB_BUSY_TIMEOUT_MS", "LOGDB_SQLITE_CACHE_KB",
            "UPSTREAM", "UPSTREAM__CONNECT_TIMEOUT", "UPSTREAM__READ_TIMEOUT", "UPSTREAM__MAX_CONNECTIONS", "PROVIDERS",
            "PROVIDERS__MOCK", "PROVIDERS__OPENROUTER__BASE_URL", "PROVIDERS__OPENROUTER__KIND",
            "PROVIDERS__OPENROUTER__API_KEY_REQUIRED", "PROVIDERS__OPENROUTER__REFERER", "PROVIDERS__LOCAL__READ_TIMEOUT",
            "PROVIDERS__NEW__KIND", "OPENROUTER_API_KEY")
HOSTILE_VALUES = ("", " ", "0", "-1", "1", "65536", "99999999999999999999", "9" * 5000, "1e3", "1e308", "inf", "nan",
                  "-0.0", "true", "yes", "off", "maybe", "[1, 2]", "{a = 1}", "[]", "@int abc", "@int 5", "@json {bad",
                  "@json [1]", "@format {this.NOPE}", "@bool x", "@none", "30 days", "30 dyas", "1 week, 3 days", "12m",
                  "0 days", "99999999999 years", "DEBUG", "warn", "uvloop", "auto", "daily", "/nonexistent/dir",
                  "http://[::1", "http://h:99999/v1", "https://example.test/v1", "ftp://x", "mock", "gemini", "ünïcödé",
                  "sk-\u00e9", "a,b, 'c' ,\"d\"", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "tab\there", "x" * 5000)


def test_every_setting_of_any_value_loads_or_is_refused_in_one_line(tmp_path):
    """Settings from the environment: the loaders (settings, then the log store's, as start-up runs
    them) take each hostile value or refuse it with one ConfigError line; nothing else escapes."""
    import random

    from aiproxy.config import load_settings
    from aiproxy.logstore.settings import LogStoreSettings
    from aiproxy.testing.gateway import SETTINGS_FILE

    loaded = refused = 0
    for seed in ENV_SEEDS:
        rng = random.Random(seed)
        env = {name: rng.choice(HOSTILE_VALUES) for name in rng.sample(SETTINGS, rng.randint(1, 3))}
        try:
            settings = load_settings({"SETTINGS_FILE": str(SETTINGS_FILE), **env}, dotenv_path=None)
            LogStoreSettings.from_mapping(settings.logdb)
        except ConfigError as exc:
            assert "\n" not in str(exc) and str(exc), f"{seed_label(seed)}: {env}"
            refused += 1
            continue
        except Exception as exc:  # noqa: BLE001 -- any other exception is the defect this test looks for
            pytest.fail(f"{seed_label(seed)}: {env}: {type(exc).__name__}: {exc}"[:2000])
        assert 0 <= settings.port <= 65535 and 0 <= settings.grpc_port <= 65535 and settings.workers >= 1, seed_label(seed)
        loaded += 1
    assert seeds_from_environment() or (loaded > 10 and refused > 50)
