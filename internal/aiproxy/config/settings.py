"""Load settings from configs/settings.toml < .env < environment into frozen dataclasses."""

from __future__ import annotations

import io
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dynaconf import Dynaconf
from dynaconf.utils.parse_conf import DynaconfFormatError, DynaconfParseError, boolean_fix, parse_conf_data
from dynaconf.vendor.dotenv import dotenv_values
from dynaconf.vendor.dotenv.parser import parse_stream

from aiproxy.identity import metadata_safe

_REPO_SETTINGS = Path(__file__).resolve().parents[3] / "configs" / "settings.toml"
PROVIDER_KINDS = ("openrouter", "openai", "gemini", "mock")


class ConfigError(Exception):
    """Bad configuration: start-up stops with this one-line message."""


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    kind: str
    base_url: str = ""
    api_key: str = ""
    api_key_env: str = ""
    api_key_required: bool = True
    referer: str = ""
    title: str = ""
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    max_connections: int = 256
    # The largest answer (or stream event) read from the upstream: what one gRPC message can relay
    # (Settings.grpc_message_bytes). More is refused, not buffered: an endless body must not fill memory.
    max_answer_bytes: int = 21 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TLSSettings:
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    hsts_max_age: int = 31536000

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8123
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    workers: int = 1
    api_keys: tuple[str, ...] = ()
    admin_api_keys: tuple[str, ...] = ()
    models_require_auth: bool = False
    key_hash_secret: str = ""
    config_path: str = "configs/config.yml"
    cors_allow_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 20 * 1024 * 1024
    request_body_timeout_seconds: float = 60.0
    shutdown_grace_seconds: float = 20.0
    event_loop: str = "auto"
    log_level: str = "INFO"
    log_dir: str = "logs"
    enable_file_logging: bool = True
    request_log_enabled: bool = True
    request_log_retention: timedelta = timedelta(days=30)
    tls: TLSSettings = field(default_factory=TLSSettings)
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    # Every LOGDB_* setting, lower-cased without the prefix; aiproxy.logstore interprets them.
    logdb: dict[str, Any] = field(default_factory=dict)
    # Where settings were read from, for error messages.
    source: str = ""

    @property
    def grpc_message_bytes(self) -> int:
        """gRPC's message size limit, both ways, on every server and channel of the gateway: a body
        of MAX_BODY_BYTES and the rest of its message (a stored record: also its answer)."""
        return message_limit(self.max_body_bytes)


def message_limit(max_body_bytes: int) -> int:
    return max_body_bytes + 1024 * 1024


MAX_PORT = 65535
# gRPC takes its message size limit as a C int: MAX_BODY_BYTES plus the 1 MiB around it must fit.
MAX_BODY_BYTES_LIMIT = 2**31 - 1 - message_limit(0)


def parse_key_list(raw: Any) -> tuple[str, ...]:
    """Seed rules for API_KEYS: comma separated, each item stripped of spaces and of one pair of
    matching surrounding quotes; empty items dropped."""
    if raw is None:
        return ()
    if isinstance(raw, list | tuple):
        items = [str(x) for x in raw]
    else:
        items = str(raw).split(",")
    return tuple(key for key in map(unquoted, items) if key)


def unquoted(value: str) -> str:
    """A key as the seed read it: without surrounding spaces and one pair of matching quotes
    (`docker run --env-file` and some orchestrators pass `KEY="sk-…"` quotes on literally)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1].strip()
    return value


def _client_keys(name: str, raw: Any) -> tuple[str, ...]:
    keys = parse_key_list(raw)
    if not all(metadata_safe(key) for key in keys):  # never quoted: it is a secret
        raise ConfigError(f"setting {name} holds a key that is not printable ASCII, which no client can send; "
                          "use letters, digits and punctuation")
    return keys


def _origins(raw: Any) -> tuple[str, ...]:
    """CORS_ALLOW_ORIGINS (comma-separated, or a TOML list) as browsers send an Origin: lower case,
    without a trailing slash. Written otherwise, an origin matched no request and CORS failed silently."""
    return tuple(dict.fromkeys(origin.rstrip("/").lower() for origin in parse_key_list(raw) if origin.rstrip("/")))


def as_bool(name: str, value: Any, error: type[ConfigError] = ConfigError) -> bool:
    """A boolean setting from TOML, .env or the environment; `error` names the setting on failure."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise error(f"setting {name.upper()}={value!r} is not a boolean (use true or false)")


def as_int(name: str, value: Any, minimum: int | None = None, error: type[ConfigError] = ConfigError,
           maximum: int | None = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool):  # TOML's: str() of 4300+ digits is a ValueError
        number = value
    else:
        try:
            number = int(str(value).strip().replace("_", ""))
        except ValueError:
            raise error(f"setting {name.upper()}={value!r} is not an integer") from None
    shown = number if number.bit_length() <= 64 else "(a number of more than 64 bits)"
    if minimum is not None and number < minimum:
        raise error(f"setting {name.upper()}={shown} must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise error(f"setting {name.upper()}={shown} must be at most {maximum}")
    return number


# gRPC takes durations as milliseconds in a C int (REQUEST_BODY_TIMEOUT_SECONDS is its idle limit): a
# longer one was an OverflowError in every cell at start. About 24.8 days, longer than any timeout needs.
MAX_SECONDS = (2**31 - 1) // 1000


def _as_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name.upper()}={value!r} is not a number") from None
    if not math.isfinite(number):  # nan and inf pass float(); the event loop's timers refuse them later
        raise ConfigError(f"setting {name.upper()}={value!r} is not a finite number")
    if number > MAX_SECONDS:
        raise ConfigError(f"setting {name.upper()}={value!r} must be at most {MAX_SECONDS} seconds (24 days)")
    return number


def _positive(name: str, value: Any) -> float:
    number = _as_float(name, value)
    if not number > 0:
        raise ConfigError(f"setting {name.upper()}={value!r} must be a positive number of seconds")
    return number


def _seconds(name: str, value: Any) -> float:
    number = _as_float(name, value)
    if number < 0:
        raise ConfigError(f"setting {name.upper()}={value!r} must not be a negative number of seconds")
    return number


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)", re.IGNORECASE)
_DURATION_UNITS = {  # loguru's spellings and values, which this setting was first read with; no bare "m"
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), timedelta(seconds=1)),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), timedelta(minutes=1)),
    **dict.fromkeys(("h", "hour", "hours"), timedelta(hours=1)),
    **dict.fromkeys(("d", "day", "days"), timedelta(days=1)),
    **dict.fromkeys(("w", "week", "weeks"), timedelta(weeks=1)),
    **dict.fromkeys(("month", "months"), timedelta(seconds=2628000)),
    **dict.fromkeys(("y", "year", "years"), timedelta(days=365)),
}


def as_duration(name: str, value: Any) -> timedelta:
    """'30 days', '12h', '1 week, 3 days', '1 month': numbers with units, added up; positive."""
    text = str(value).strip()
    parts = _DURATION_PART.findall(text)
    leftover = re.sub(r"[\s,]", "", _DURATION_PART.sub("", text))
    try:
        total = sum((float(n) * _DURATION_UNITS[unit.lower()] for n, unit in parts), timedelta())
    except (KeyError, OverflowError):  # an unknown unit; more than timedelta holds
        total = timedelta()
    if not parts or leftover or total <= timedelta():
        raise ConfigError(f"setting {name.upper()}={value!r} is not a duration: write it like '30 days', '12 hours'"
                          " or '1 week, 3 days'")
    return total


def _listen_host(name: str, value: Any) -> str:
    """A listen address, an IPv6 one without brackets (`::1` and `[::1]` alike: aiohttp takes only
    the first, gRPC's address only the second; host_port() adds them back). An empty one would bind
    every interface (IPv4 and IPv6), serving the network although only HOST=0.0.0.0 is documented
    to do that."""
    host = str(value).strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1].strip()
    if not host:
        raise ConfigError(f"setting {name.upper()} is empty, which would listen on every interface: use 127.0.0.1,"
                          " or 0.0.0.0 to serve the network")
    return host


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:8123`), as gRPC addresses and URLs need it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _log_dir(value: Any) -> str:
    """An empty LOG_DIR (`LOG_DIR=` in .env) put app.log, requests/ and .key_hash_secret in the
    working directory, e.g. the project root."""
    log_dir = str(value).strip()
    if not log_dir:
        raise ConfigError("setting LOG_DIR is empty: set a directory for the log files (the default is logs)")
    return log_dir


def _settings_file(env: dict[str, str]) -> Path:
    explicit = env.get("SETTINGS_FILE")
    candidates = [Path(explicit)] if explicit else [Path("configs/settings.toml"), _REPO_SETTINGS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"settings file not found ({candidates[0]}); set SETTINGS_FILE or run from the project root")


def read_config_text(path: Path) -> str:
    """A configuration file's text; ConfigError naming the file when it is not UTF-8 or cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def _check_dotenv(dotenv: Path) -> None:
    """.env must be UTF-8 (else dotenv's traceback) and every line one dotenv reads: a line it cannot
    (`API_KEYS='sk-…` with its quote left open) was skipped with a warning, and the gateway started
    without that setting (without API_KEYS: with a new generated key). The line is not quoted: it may
    hold a key."""
    for binding in parse_stream(io.StringIO(read_config_text(dotenv))):
        if binding.error:
            raise ConfigError(f"{dotenv}: line {binding.original.line} is not NAME=value (a quote left open?);"
                              " fix or remove it")


def _check_settings_file(settings_file: Path) -> None:
    """The settings file must be readable UTF-8 TOML: Dynaconf would otherwise end start-up in a
    traceback (TOMLDecodeError, UnicodeDecodeError) instead of one line naming the file."""
    try:
        tomllib.loads(read_config_text(settings_file))
    except ValueError as exc:  # a TOMLDecodeError, or an integer of 4300+ digits
        raise ConfigError(f"{settings_file}: invalid TOML: {exc}") from None


_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}
_SECRETS = frozenset({"API_KEYS", "ADMIN_API_KEYS", "KEY_HASH_SECRET"})


def _is_secret(name: str) -> bool:
    """Keys are taken verbatim: TOML parsing would turn a key like `0x1F` or `true` into a number."""
    upper = name.upper()
    return upper in _SECRETS or upper.endswith("_API_KEY")


def _beside_settings(config_path: str, settings_file: Path) -> str:
    """A relative CONFIG_PATH is tried from the working directory, then from the project root of
    the settings file, so `aiproxy serve` works from anywhere with the embedded defaults."""
    candidate = Path(config_path)
    if candidate.is_absolute() or candidate.exists():
        return config_path
    beside = settings_file.resolve().parent.parent / candidate
    return str(beside) if beside.exists() else config_path


def _base_url(name: str, kind: str, value: Any) -> str:
    """An upstream's absolute http(s) URL (the mock needs none, Gemini has a default): anything else
    was accepted and every call to that provider was a 502 'unreachable: ReadError'."""
    url = str(value).strip().rstrip("/")
    if kind == "mock" or (kind == "gemini" and not url):
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port past 65535 (or not a number) is a ValueError here, not at every call
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"setting PROVIDERS__{name.upper()}__BASE_URL={url!r} is not an http:// or https:// URL")
    return url


def _table(name: str, value: Any) -> dict[str, Any]:
    """A settings table ([upstream], [providers.NAME]); PROVIDERS=5 or PROVIDERS__MOCK=1 in the
    environment replaces it with a scalar."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"setting {name.upper()}={value!r} must be a table (in the settings file), or set its keys"
                          f" one by one: {name.upper()}__KEY=value")
    return {str(k).lower(): v for k, v in value.items()}


def _provider(name: str, raw: dict[str, Any], upstream: dict[str, Any], env: dict[str, str],
              max_answer_bytes: int) -> ProviderSettings:
    kind = str(raw.get("kind", name)).lower()
    if kind not in PROVIDER_KINDS:
        raise ConfigError(f"provider {name!r}: kind {kind!r} is unknown (use one of {', '.join(PROVIDER_KINDS)})")
    key_env = str(raw.get("api_key_env", ""))
    api_key = unquoted(str(raw.get("api_key") or (env.get(key_env, "") if key_env else "")))
    # Sent as HTTP headers, which httpx refuses beyond printable ASCII: every call would be a 500.
    if not metadata_safe(api_key):  # never quoted: it is a secret
        raise ConfigError(f"setting {key_env or f'PROVIDERS__{name.upper()}__API_KEY'} holds a key that is not "
                          "printable ASCII, which no HTTP header can carry")
    for header in ("referer", "title"):
        if not metadata_safe(str(raw.get(header, ""))):
            raise ConfigError(f"setting PROVIDERS__{name.upper()}__{header.upper()}={raw[header]!r} is not printable "
                              "ASCII, which no HTTP header can carry")
    merged = {**upstream, **raw}

    def setting(key: str) -> str:
        """The name an error quotes: the provider's own override when it has one, else [upstream]'s."""
        return f"providers__{name}__{key}" if key in raw else f"upstream__{key}"

    return ProviderSettings(
        name=name,
        kind=kind,
        base_url=_base_url(name, kind, raw.get("base_url", "")),
        api_key=api_key,
        api_key_env=key_env,
        api_key_required=as_bool(f"providers__{name}__api_key_required", raw.get("api_key_required", kind != "mock")),
        referer=str(raw.get("referer", "")),
        title=str(raw.get("title", "")),
        connect_timeout=_seconds(setting("connect_timeout"), merged.get("connect_timeout", 10.0)),
        read_timeout=_seconds(setting("read_timeout"), merged.get("read_timeout", 300.0)),
        max_connections=as_int(setting("max_connections"), merged.get("max_connections", 256), 1),
        max_answer_bytes=max_answer_bytes,
    )


def load_settings(env: dict[str, str] | None = None, dotenv_path: str | None = ".env") -> Settings:
    """Read settings; raise ConfigError with one clear line when something is wrong."""
    try:
        return _load_settings(env, dotenv_path)
    except (DynaconfFormatError, DynaconfParseError, ImportError) as exc:  # '@format {this.X}', '@jinja' without
        # jinja2: evaluated when read
        raise ConfigError(f"a setting's Dynaconf marker (@format, @int, @json, …) cannot be read: {exc}") from None


def _parsed(name: str, value: str, raw: Dynaconf) -> Any:
    """A value from .env or the environment as a TOML value (PORT=8123 an integer), Dynaconf's
    markers (@int, @json, …) applied; one line naming the setting when that fails."""
    if _is_secret(name):
        return value
    try:
        return parse_conf_data(boolean_fix(value), tomlfy=True, box_settings=raw)
    except (DynaconfFormatError, DynaconfParseError, ValueError) as exc:  # ValueError: an integer of 4300+ digits
        raise ConfigError(f"setting {name}={value!r}: {exc}") from None


def _load_settings(env: dict[str, str] | None, dotenv_path: str | None) -> Settings:
    process_env = env is None
    env = dict(os.environ if env is None else env)
    dotenv = Path(dotenv_path) if dotenv_path else None
    if dotenv is not None and dotenv.is_file():
        _check_dotenv(dotenv)
    dotenv_vars = {k: v for k, v in dotenv_values(dotenv).items() if v is not None} if dotenv and dotenv.is_file() else {}
    # .env may name the settings file too (the environment wins), as it may set any other variable
    path = _settings_file({**dotenv_vars, **env})
    _check_settings_file(path)
    if process_env:  # as python-dotenv's load_dotenv: .env fills the process environment, never overrides it
        for key, value in dotenv_vars.items():
            os.environ.setdefault(key, value)
    # Dynaconf's own env loader reads os.environ; feed it `env` instead so an explicit env is honoured.
    raw = Dynaconf(settings_files=[str(path)], environments=True, envvar_prefix=None, load_dotenv=False, merge_enabled=True)
    overrides = {**dotenv_vars, **env}
    if overrides:
        raw.update({k: _parsed(k, v, raw) for k, v in overrides.items()})
    # The .env file may carry provider keys too (OPENROUTER_API_KEY=...): env wins over it.
    lookup = {**{k: str(v) for k, v in raw.as_dict().items() if not isinstance(v, dict | list)}, **env}

    def get(name: str, default: Any = None) -> Any:
        return raw.get(name, default)

    upstream = _table("upstream", get("upstream"))
    max_body_bytes = as_int("max_body_bytes", get("max_body_bytes", 20 * 1024 * 1024), 1024,
                            maximum=MAX_BODY_BYTES_LIMIT)
    providers = {str(n).lower(): _provider(str(n).lower(), _table(f"providers__{n}", p), upstream, lookup,
                                           message_limit(max_body_bytes))
                 for n, p in _table("providers", get("providers")).items()}
    origins = get("cors_allow_origins", "*")
    tls = TLSSettings(
        cert_file=str(get("tls_cert_file", "") or ""),
        key_file=str(get("tls_key_file", "") or ""),
        client_ca_file=str(get("tls_client_ca_file", "") or ""),
        hsts_max_age=as_int("hsts_max_age", get("hsts_max_age", 31536000), 0),
    )
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("TLS needs both TLS_CERT_FILE and TLS_KEY_FILE (only one is set)")
    if tls.client_ca_file and not tls.enabled:  # else gRPC would quietly accept plain-text calls from anyone
        raise ConfigError("TLS_CLIENT_CA_FILE (mutual TLS on gRPC) needs TLS_CERT_FILE and TLS_KEY_FILE too")
    level = str(get("log_level", "INFO")).strip().upper()
    level = _LEVEL_ALIASES.get(level, level)  # Python's logging (the seed) accepts these spellings too
    if level not in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"setting LOG_LEVEL={level!r} is not a log level (use DEBUG, INFO, WARNING or ERROR)")
    event_loop = str(get("event_loop", "auto")).lower()
    if event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"setting EVENT_LOOP={event_loop!r} is not one of auto, uvloop, asyncio")
    logdb = {k.lower()[len("logdb_"):]: v for k, v in raw.as_dict().items() if k.lower().startswith("logdb_")}
    return Settings(
        host=_listen_host("host", get("host", "127.0.0.1")),
        port=as_int("port", get("port", 8123), 0, maximum=MAX_PORT),
        grpc_host=_listen_host("grpc_host", get("grpc_host", "127.0.0.1")),
        grpc_port=as_int("grpc_port", get("grpc_port", 50051), 0, maximum=MAX_PORT),
        workers=as_int("workers", get("workers", 1), 1),
        api_keys=_client_keys("API_KEYS", get("api_keys", "")),
        admin_api_keys=_client_keys("ADMIN_API_KEYS", get("admin_api_keys", "")),
        models_require_auth=as_bool("models_require_auth", get("models_require_auth", False)),
        key_hash_secret=str(get("key_hash_secret", "") or ""),
        config_path=_beside_settings(str(get("config_path", "configs/config.yml")), path),
        cors_allow_origins=_origins(origins),
        max_body_bytes=max_body_bytes,
        request_body_timeout_seconds=_positive("request_body_timeout_seconds", get("request_body_timeout_seconds", 60)),
        shutdown_grace_seconds=_seconds("shutdown_grace_seconds", get("shutdown_grace_seconds", 20)),
        event_loop=event_loop,
        log_level=level,
        log_dir=_log_dir(get("log_dir", "logs")),
        enable_file_logging=as_bool("enable_file_logging", get("enable_file_logging", True)),
        request_log_enabled=as_bool("request_log_enabled", get("request_log_enabled", True)),
        request_log_retention=as_duration("request_log_retention", get("request_log_retention", "30 days")),
        tls=tls,
        providers=providers,
        logdb=logdb,
        source=str(path),
    )
