"""aiproxy.config.settings: settings.toml < .env < environment, and one clear ConfigError per bad value.

Every test passes an explicit `env` dict, so nothing here reads or changes the process environment.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from aiproxy.config import ConfigError, load_settings, parse_key_list

SETTINGS_FILE = str(Path(__file__).resolve().parents[3] / "configs" / "settings.toml")


@pytest.fixture()
def load(tmp_path):
    """load(ENV=...) with the shipped settings.toml and a .env in tmp_path (empty unless written)."""
    dotenv = tmp_path / ".env"

    def _load(dotenv_text: str | None = None, **env: str):
        if dotenv_text is not None:
            dotenv.write_text(dotenv_text, encoding="utf-8")
        return load_settings(env={"SETTINGS_FILE": SETTINGS_FILE, **env}, dotenv_path=str(dotenv))

    return _load


# --- parse_key_list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,keys",
    [
        (None, ()),
        ("", ()),
        ("k1", ("k1",)),
        ("k1,k2", ("k1", "k2")),
        (" k1 , k2 ,", ("k1", "k2")),
        (",,k1,,", ("k1",)),
        ('"k1",\'k2\'', ("k1", "k2")),
        ('" k1 "', ("k1",)),
        ("'k1\"", ("'k1\"",)),  # quotes that do not match are part of the key
        ('"', ('"',)),
        ('""', ()),
        ("' '", ()),
        (["a", " b ", "", "'c'"], ("a", "b", "c")),
        (("x",), ("x",)),
        (12345, ("12345",)),
    ],
)
def test_parse_key_list(raw, keys):
    assert parse_key_list(raw) == keys


# --- load_settings ----------------------------------------------------------------------------


def test_defaults_from_the_shipped_settings_file(load):
    settings = load()
    assert settings.port == 8123 and settings.grpc_port == 50051 and settings.workers == 1
    assert settings.api_keys == () and settings.models_require_auth is False
    assert settings.max_body_bytes == 20_971_520
    assert settings.log_level == "INFO"
    assert settings.event_loop == "auto"
    assert settings.tls.enabled is False
    assert settings.source == SETTINGS_FILE
    assert set(settings.providers) >= {"openrouter", "gemini", "openai", "local", "mock"}
    assert settings.providers["mock"].api_key_required is False
    assert settings.providers["openrouter"].api_key_required is True
    assert settings.providers["local"].api_key_required is False
    assert settings.providers["openrouter"].read_timeout == 300.0
    assert settings.logdb["enabled"] is False


def test_environment_overrides(load):
    settings = load(PORT="9000", WORKERS="3", MODELS_REQUIRE_AUTH="yes", LOG_LEVEL="debug",
                    API_KEYS="k1, 'k2' ,\"k3\",,", ADMIN_API_KEYS="adm", CORS_ALLOW_ORIGINS="https://a, https://b",
                    LOGDB_ENABLED="true", LOGDB_SERVER_ID="srv-1")
    assert settings.port == 9000 and settings.workers == 3
    assert settings.models_require_auth is True
    assert settings.log_level == "DEBUG"
    assert settings.api_keys == ("k1", "k2", "k3")
    assert settings.admin_api_keys == ("adm",)
    assert settings.cors_allow_origins == ("https://a", "https://b")
    assert settings.logdb["enabled"] is True and settings.logdb["server_id"] == "srv-1"


@pytest.mark.parametrize("value", ['["https://a.example", "https://b.example"]', "https://a.example/, 'HTTPS://B.Example'"])
def test_cors_origins_as_a_list_or_written_loosely_are_the_origins_browsers_send(load, value):
    """Was: a TOML list (`cors_allow_origins = ["https://a", ...]` in settings.toml, or as the variable)
    became the origins `['https://a.example'` and `'https://b.example']`, and a trailing slash or capitals
    were kept: browsers send `https://a.example`, which then matched nothing and CORS failed silently."""
    assert load(CORS_ALLOW_ORIGINS=value).cors_allow_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize("text,value", [("1", True), ("true", True), ("On", True), ("0", False), ("false", False),
                                        ("off", False), ("no", False)])
def test_booleans(load, text, value):
    assert load(MODELS_REQUIRE_AUTH=text).models_require_auth is value


@pytest.mark.parametrize(
    "env,setting",
    [
        ({"MODELS_REQUIRE_AUTH": "maybe"}, "MODELS_REQUIRE_AUTH"),
        ({"REQUEST_LOG_ENABLED": "sometimes"}, "REQUEST_LOG_ENABLED"),
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "-1"}, "PORT"),
        ({"GRPC_PORT": "5x"}, "GRPC_PORT"),
        # Out of range: start-up ended in a traceback (bind's OverflowError, gRPC's C int option).
        ({"PORT": "70000"}, "PORT"),
        # Not an absolute http(s) URL: every call of the provider was a 502 "unreachable: ReadError".
        ({"PROVIDERS__LOCAL__BASE_URL": "localhost:11434/v1"}, "PROVIDERS__LOCAL__BASE_URL"),
        ({"PROVIDERS__OPENROUTER__BASE_URL": ""}, "PROVIDERS__OPENROUTER__BASE_URL"),
        ({"PROVIDERS__VLLM__KIND": "openai"}, "PROVIDERS__VLLM__BASE_URL"),
        ({"PROVIDERS__OPENAI__BASE_URL": "ftp://example.com/v1"}, "PROVIDERS__OPENAI__BASE_URL"),
        ({"GRPC_PORT": "65536"}, "GRPC_PORT"),
        ({"MAX_BODY_BYTES": "3000000000"}, "MAX_BODY_BYTES"),
        # An empty listen address bound every interface: the gateway served the network unasked.
        ({"HOST": ""}, "HOST"),
        ({"GRPC_HOST": " "}, "GRPC_HOST"),
        # Wrote app.log, requests/ and .key_hash_secret into the working directory.
        ({"LOG_DIR": ""}, "LOG_DIR"),
        ({"WORKERS": "0"}, "WORKERS"),
        ({"WORKERS": "two"}, "WORKERS"),
        ({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES"),
        ({"HSTS_MAX_AGE": "forever"}, "HSTS_MAX_AGE"),
        ({"SHUTDOWN_GRACE_SECONDS": "soon"}, "SHUTDOWN_GRACE_SECONDS"),
        # nan passed float(): the stop ended in a ValueError traceback and exit 1; every upstream call
        # with a nan read timeout was a 502. Negative seconds are a typo.
        ({"SHUTDOWN_GRACE_SECONDS": "nan"}, "SHUTDOWN_GRACE_SECONDS"),
        ({"SHUTDOWN_GRACE_SECONDS": "-5"}, "SHUTDOWN_GRACE_SECONDS"),
        ({"REQUEST_BODY_TIMEOUT_SECONDS": "inf"}, "REQUEST_BODY_TIMEOUT_SECONDS"),
        ({"UPSTREAM__READ_TIMEOUT": "nan"}, "UPSTREAM__READ_TIMEOUT"),
        ({"UPSTREAM__CONNECT_TIMEOUT": "-1"}, "UPSTREAM__CONNECT_TIMEOUT"),
        ({"REQUEST_BODY_TIMEOUT_SECONDS": "0"}, "REQUEST_BODY_TIMEOUT_SECONDS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"EVENT_LOOP": "trio"}, "EVENT_LOOP"),
        ({"UPSTREAM__MAX_CONNECTIONS": "lots"}, "UPSTREAM__MAX_CONNECTIONS"),
        ({"UPSTREAM__READ_TIMEOUT": "long"}, "UPSTREAM__READ_TIMEOUT"),
        # A provider's own override was reported as UPSTREAM__…, a setting the operator had not written.
        ({"PROVIDERS__OPENROUTER__READ_TIMEOUT": "long"}, "PROVIDERS__OPENROUTER__READ_TIMEOUT"),
        ({"PROVIDERS__GEMINI__CONNECT_TIMEOUT": "-1"}, "PROVIDERS__GEMINI__CONNECT_TIMEOUT"),
        ({"PROVIDERS__LOCAL__MAX_CONNECTIONS": "lots"}, "PROVIDERS__LOCAL__MAX_CONNECTIONS"),
        ({"PROVIDERS__OPENROUTER__API_KEY_REQUIRED": "perhaps"}, "PROVIDERS__OPENROUTER__API_KEY_REQUIRED"),
        ({"API_KEYS": "ok,ключ"}, "API_KEYS"),  # no client could send it
        ({"ADMIN_API_KEYS": "tab\tkey"}, "ADMIN_API_KEYS"),
        # Upstream request headers: every call of the provider was a 500.
        ({"PROVIDERS__OPENROUTER__TITLE": "Café Bot"}, "PROVIDERS__OPENROUTER__TITLE"),
        ({"PROVIDERS__OPENROUTER__REFERER": "https://bücher.example"}, "PROVIDERS__OPENROUTER__REFERER"),
        ({"OPENROUTER_API_KEY": "sk-or-v1-ключ"}, "OPENROUTER_API_KEY"),
        ({"PROVIDERS__VLLM__KIND": "openai", "PROVIDERS__VLLM__API_KEY": "k\tey"}, "PROVIDERS__VLLM__API_KEY"),
        ({"REQUEST_LOG_RETENTION": "7"}, "REQUEST_LOG_RETENTION"),
        ({"REQUEST_LOG_RETENTION": "forever"}, "REQUEST_LOG_RETENTION"),
        ({"REQUEST_LOG_RETENTION": "0 days"}, "REQUEST_LOG_RETENTION"),
        ({"REQUEST_LOG_RETENTION": "3 fortnights"}, "REQUEST_LOG_RETENTION"),
        ({"REQUEST_LOG_RETENTION": "6m"}, "REQUEST_LOG_RETENTION"),  # months or minutes? loguru refuses it too
        ({"REQUEST_LOG_RETENTION": "99999999999 years"}, "REQUEST_LOG_RETENTION"),
        ({"REQUEST_LOG_RETENTION": "5 days please"}, "REQUEST_LOG_RETENTION"),
    ],
)
def test_bad_values_are_config_errors_naming_the_setting(load, env, setting):
    with pytest.raises(ConfigError) as info:
        load(**env)
    message = str(info.value)
    assert setting in message
    assert "\n" not in message


def test_nested_provider_settings_from_the_environment(load):
    settings = load(PROVIDERS__OPENROUTER__BASE_URL="http://127.0.0.1:9000/api/v1/",
                    UPSTREAM__CONNECT_TIMEOUT="2.5", PROVIDERS__OPENROUTER__READ_TIMEOUT="7")
    openrouter = settings.providers["openrouter"]
    assert openrouter.base_url == "http://127.0.0.1:9000/api/v1"  # trailing slash dropped
    assert openrouter.api_key_env == "OPENROUTER_API_KEY"  # the rest of the table is kept (merged)
    assert openrouter.title == "AI Proxy"
    assert openrouter.connect_timeout == 2.5 and openrouter.read_timeout == 7.0
    assert settings.providers["gemini"].connect_timeout == 2.5 and settings.providers["gemini"].read_timeout == 300.0


def test_a_provider_can_be_added_from_the_environment(load):
    settings = load(PROVIDERS__VLLM__KIND="openai", PROVIDERS__VLLM__BASE_URL="http://gpu:8000/v1",
                    PROVIDERS__VLLM__API_KEY_ENV="VLLM_KEY", VLLM_KEY="vk")
    vllm = settings.providers["vllm"]
    assert (vllm.kind, vllm.base_url, vllm.api_key) == ("openai", "http://gpu:8000/v1", "vk")


def test_unknown_provider_kind_is_a_config_error(load):
    with pytest.raises(ConfigError, match="anthropic"):
        load(PROVIDERS__CLAUDE__KIND="anthropic")


def test_provider_api_key_comes_from_its_api_key_env(load):
    settings = load(OPENROUTER_API_KEY=" sk-or-123 ", GEMINI_API_KEY="g-key")
    assert settings.providers["openrouter"].api_key == "sk-or-123"
    assert settings.providers["gemini"].api_key == "g-key"
    assert settings.providers["openai"].api_key == ""
    settings = load(PROVIDERS__OPENAI__API_KEY_ENV="MY_OPENAI", MY_OPENAI="sk-mine", OPENAI_API_KEY="sk-not-this")
    assert settings.providers["openai"].api_key == "sk-mine"


@pytest.mark.parametrize("raw", ['"sk-or-123"', "'sk-or-123'", ' " sk-or-123 " '])
def test_provider_api_key_loses_surrounding_quotes_as_in_the_seed(load, raw):
    # `docker run --env-file .env` passes OPENROUTER_API_KEY="sk-…" with its quotes; the seed removed
    # them, as it does for API_KEYS. Sent quoted, every upstream call failed its auth (502).
    settings = load(OPENROUTER_API_KEY=raw, GEMINI_API_KEY=raw, PROVIDERS__OPENAI__API_KEY=raw)
    assert {settings.providers[name].api_key for name in ("openrouter", "gemini", "openai")} == {"sk-or-123"}
    assert load(OPENROUTER_API_KEY="'sk-or-123\"").providers["openrouter"].api_key == "'sk-or-123\""  # unmatched: kept


@pytest.mark.parametrize(("given", "level"), [("warn", "WARNING"), ("WARN", "WARNING"), ("fatal", "CRITICAL"),
                                              (" warning ", "WARNING"), ("debug", "DEBUG")])
def test_log_level_accepts_pythons_spellings_as_the_seed_did(load, given, level):
    assert load(LOG_LEVEL=given).log_level == level


def test_dotenv_is_read_and_the_environment_wins_over_it(load):
    settings = load('PORT=7000\nOPENROUTER_API_KEY=from-dotenv\nAPI_KEYS="a,b"\nWORKERS=2\n', WORKERS="5")
    assert settings.port == 7000
    assert settings.workers == 5
    assert settings.providers["openrouter"].api_key == "from-dotenv"
    assert settings.api_keys == ("a", "b")
    settings = load(OPENROUTER_API_KEY="from-env")
    assert settings.providers["openrouter"].api_key == "from-env"


def test_settings_file_in_dotenv_is_read_and_the_environment_wins_over_it(tmp_path):
    """SETTINGS_FILE in .env was read only by a second load (after a generated key), so the first
    start ran on the shipped defaults and the next on the .env's file."""
    custom = tmp_path / "custom.toml"
    custom.write_text(Path(SETTINGS_FILE).read_text().replace("port = 8123", "port = 7123"))
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"SETTINGS_FILE={custom}\n")
    assert load_settings(env={}, dotenv_path=str(dotenv)).port == 7123
    assert load_settings(env={"SETTINGS_FILE": SETTINGS_FILE}, dotenv_path=str(dotenv)).port == 8123


def test_an_explicit_env_neither_reads_nor_changes_the_process_environment(load, monkeypatch):
    monkeypatch.setenv("PORT", "1111")
    monkeypatch.delenv("AIPROXY_TEST_ONLY_KEY", raising=False)
    settings = load("AIPROXY_TEST_ONLY_KEY=x\n")
    assert settings.port == 8123
    assert "AIPROXY_TEST_ONLY_KEY" not in os.environ


def test_tls_needs_both_cert_and_key(load, tmp_path):
    with pytest.raises(ConfigError, match="TLS_CERT_FILE and TLS_KEY_FILE"):
        load(TLS_CERT_FILE=str(tmp_path / "cert.pem"))
    with pytest.raises(ConfigError, match="TLS_CERT_FILE and TLS_KEY_FILE"):
        load(TLS_KEY_FILE=str(tmp_path / "key.pem"))
    tls = load(TLS_CERT_FILE="/c.pem", TLS_KEY_FILE="/k.pem", HSTS_MAX_AGE="0").tls
    assert tls.enabled and (tls.cert_file, tls.key_file, tls.hsts_max_age) == ("/c.pem", "/k.pem", 0)


@pytest.mark.parametrize("text,problem", [(b"[default]\nport = \n", "invalid TOML"),
                                          (b"[default]\ntitle = 'caf\xe9'\n", "not UTF-8")])
def test_a_broken_settings_file_is_a_config_error_naming_it(tmp_path, text, problem):
    # Start-up ended in a traceback (Dynaconf's TOMLDecodeError, a UnicodeDecodeError).
    broken = tmp_path / "settings.toml"
    broken.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SETTINGS_FILE": str(broken)}, dotenv_path=None)
    assert str(broken) in str(info.value) and problem in str(info.value) and "\n" not in str(info.value)


def test_a_dotenv_that_is_not_utf8_is_a_config_error_naming_it(load, tmp_path):
    (tmp_path / ".env").write_bytes(b"PORT=9000\nTITLE=caf\xe9\n")  # latin-1
    with pytest.raises(ConfigError, match=r"\.env: not UTF-8"):
        load()


def test_missing_settings_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="SETTINGS_FILE"):
        load_settings(env={"SETTINGS_FILE": str(tmp_path / "missing.toml")}, dotenv_path=None)


@pytest.mark.parametrize(
    ("text", "duration"),
    [("30 days", timedelta(days=30)), ("1 week", timedelta(weeks=1)), ("12 Hours", timedelta(hours=12)),
     ("1.5 day", timedelta(hours=36)), ("90 seconds", timedelta(seconds=90)),
     # loguru's spellings, which earlier versions passed through
     ("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("1 month", timedelta(seconds=2628000)),
     ("1 year", timedelta(days=365)), ("1 week, 3 days", timedelta(days=10))],
)
def test_request_log_retention_is_a_duration(load, text, duration):
    assert load(REQUEST_LOG_RETENTION=text).request_log_retention == duration


@pytest.mark.parametrize("env, problem", [
    ({"PROVIDERS": "5"}, "setting PROVIDERS=5 must be a table"),
    ({"UPSTREAM": "1"}, "setting UPSTREAM=1 must be a table"),
    ({"PROVIDERS__MOCK": "1"}, "setting PROVIDERS__MOCK=1 must be a table"),
    ({"PROVIDERS__MOCK": "[1, 2]"}, "setting PROVIDERS__MOCK=[1, 2] must be a table"),
    ({"PORT": "@int abc"}, "setting PORT='@int abc': Cannot convert 'abc' to integer"),
    ({"PORT": "@json {bad"}, "setting PORT='@json {bad': Cannot parse as JSON"),
    ({"LOG_DIR": "@format {this.NOPE}"}, "a setting's Dynaconf marker"),
    ({"MAX_BODY_BYTES": "9" * 5000}, "setting MAX_BODY_BYTES="),
    ({"PROVIDERS__OPENROUTER__BASE_URL": "http://[::1"}, "setting PROVIDERS__OPENROUTER__BASE_URL='http://[::1' is not an http"),
    ({"PROVIDERS__OPENROUTER__BASE_URL": "http://h:99999/v1"}, "setting PROVIDERS__OPENROUTER__BASE_URL='http://h:99999/v1' is not an http"),
])
def test_settings_of_the_wrong_shape_are_one_line_naming_them(load, env, problem):
    with pytest.raises(ConfigError, match="^" + re.escape(problem)):
        load(**env)


def test_an_integer_past_4300_digits_in_the_settings_file_names_the_file(tmp_path):
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(f"[default]\nport = {'9' * 5000}\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(settings_file))}: invalid TOML: Exceeds the limit"):
        load_settings(env={"SETTINGS_FILE": str(settings_file)}, dotenv_path=None)


@pytest.mark.parametrize("name", ["REQUEST_BODY_TIMEOUT_SECONDS", "SHUTDOWN_GRACE_SECONDS", "UPSTREAM__READ_TIMEOUT",
                                  "UPSTREAM__CONNECT_TIMEOUT", "PROVIDERS__LOCAL__READ_TIMEOUT"])
@pytest.mark.parametrize("value", ["1e308", "2147484"])
def test_seconds_beyond_what_grpc_and_timers_take_are_refused(load, name, value):
    with pytest.raises(ConfigError, match=f"^setting {name}=\\S+ must be at most 2147483 seconds"):
        load(**{name: value})
    load(**{name: "2147483"})


@pytest.mark.parametrize("line", ["API_KEYS='sk-never-shown", 'API_KEYS="sk-never-shown', "PORT='9000' 9001'",
                                  "=sk-never-shown"])
def test_a_dotenv_line_dotenv_cannot_read_is_refused_without_quoting_it(load, line):
    with pytest.raises(ConfigError, match=r"\.env: line 2 is not NAME=value") as info:
        load(f"LOG_LEVEL=DEBUG\n{line}\nPORT=9000\n")
    assert "sk-never-shown" not in str(info.value)


def test_dotenv_lines_of_every_style_read_as_the_environment(load):
    settings = load("# comment\nNOEQUALS\nexport PORT=9001\nLOG_LEVEL='debug' # why\n  HOST = \"::1\"\n")
    assert (settings.port, settings.log_level, settings.host) == (9001, "DEBUG", "::1")
