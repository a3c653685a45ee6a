"""Every variable the README and docs/logstore.md document is one the code reads.

Seed §11 Documentation drift: its docs named `LOGDB_MEMORY_CAP_MB` (the code read `LOGDB_MEMORY_MB`)
and `ENABLE_FUNCTIONAL_TESTS` (read nowhere), so setting them did nothing. Here each documented
variable, set to a value no setting accepts as-is, must either stop start-up with an error naming
it or change the settings the gateway (or logdb) runs with.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from aiproxy.config import ConfigError, load_settings
from aiproxy.logstore.settings import LogStoreSettings

REPO = Path(__file__).resolve().parents[3]
SETTINGS_TOML = REPO / "configs" / "settings.toml"
SETTINGS_FILE = str(SETTINGS_TOML)
PROBE = "zz-doc-check"


def _table_variables(path: Path, heading: str) -> list[str]:
    """The upper-case `NAMES` in the first column of the table under `heading`."""
    text = path.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += [n for n in re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]) if not n.endswith("_")]
    return names


README_VARIABLES = [n for n in _table_variables(REPO / "README.md", "## Configuration") if not n.startswith("LOGDB_")]
LOGDB_VARIABLES = _table_variables(REPO / "docs" / "logstore.md", "## Settings")


def test_the_tables_were_found():
    assert {"API_KEYS", "PORT", "MAX_BODY_BYTES", "OPENROUTER_API_KEY", "TLS_CLIENT_CA_FILE"} <= set(README_VARIABLES)
    assert {"LOGDB_MEMORY_MB", "LOGDB_DIR", "LOGDB_BATCH_KB", "LOGDB_BUNDLE_INCLUDE_RAW"} <= set(LOGDB_VARIABLES)


def _load(**env):
    return load_settings(env={"SETTINGS_FILE": SETTINGS_FILE, **env}, dotenv_path=None)


@pytest.mark.parametrize("name", README_VARIABLES)
def test_every_readme_variable_is_read(name):
    base = _load()
    try:
        changed = _load(**{name: PROBE})
    except ConfigError as error:
        assert name.lower() in str(error).lower(), f"{name}: the error names something else: {error}"
        return
    assert changed != base, f"{name} is documented in README.md but setting it changes nothing"


@pytest.mark.parametrize("name", LOGDB_VARIABLES)
def test_every_logstore_variable_is_read(name):
    try:
        changed = LogStoreSettings.from_mapping({}, {name: PROBE})
    except ConfigError as error:
        assert name.lower() in str(error).lower(), f"{name}: the error names something else: {error}"
        return
    assert changed != LogStoreSettings.from_mapping({}, {}), f"{name} is documented but setting it changes nothing"


def test_every_logstore_setting_is_documented():
    fields = {f"LOGDB_{name.upper()}" for name in LogStoreSettings.__dataclass_fields__}
    assert fields <= set(LOGDB_VARIABLES), fields - set(LOGDB_VARIABLES)


def test_every_gateway_setting_is_documented():
    """The other direction: a setting the gateway reads but the README's table leaves out is one a user
    cannot find (REQUEST_LOG_ENABLED, KEY_HASH_SECRET, HSTS_MAX_AGE and SETTINGS_FILE were missing)."""
    from aiproxy.config import Settings, TLSSettings

    nested = {"tls", "providers", "logdb", "source"}  # set through their own names, or not a setting
    names = {name.upper() for name in Settings.__dataclass_fields__} - {n.upper() for n in nested}
    names |= {name.upper() if name == "hsts_max_age" else f"TLS_{name.upper()}" for name in TLSSettings.__dataclass_fields__}
    names.add("SETTINGS_FILE")
    assert names <= set(README_VARIABLES), names - set(README_VARIABLES)


def test_settings_toml_holds_every_default():
    """The README calls configs/settings.toml the file with every default, documented: the log store's
    busy timeout, WAL checkpoint, page cache, env and bundle_include_raw were missing from it (and
    logdb_bundle_include_raw written there was not read)."""
    from aiproxy.config import Settings, TLSSettings

    defaults = tomllib.loads(SETTINGS_TOML.read_text(encoding="utf-8"))["default"]
    names = {name for name in Settings.__dataclass_fields__} - {"tls", "providers", "logdb", "source"}
    names |= {name if name == "hsts_max_age" else f"tls_{name}" for name in TLSSettings.__dataclass_fields__}
    names |= {f"logdb_{name}" for name in LogStoreSettings.__dataclass_fields__}
    assert names <= set(defaults), names - set(defaults)
    assert LogStoreSettings.from_mapping({"bundle_include_raw": True}, {}).bundle_include_raw is True


def _toml_keys(table: dict, prefix: str = "") -> list[str]:
    """Every key of a settings table as its variable name: `upstream.read_timeout` is UPSTREAM__READ_TIMEOUT."""
    names = []
    for key, value in table.items():
        name = f"{prefix}{key.upper()}"
        names += _toml_keys(value, f"{name}__") if isinstance(value, dict) else [name]
    return names


TOML_KEYS = _toml_keys(tomllib.loads(SETTINGS_TOML.read_text(encoding="utf-8"))["default"])


def test_the_settings_file_keys_were_found():
    assert {"PORT", "LOGDB_DIR", "UPSTREAM__READ_TIMEOUT", "PROVIDERS__LOCAL__API_KEY_REQUIRED"} <= set(TOML_KEYS)


@pytest.mark.parametrize("name", TOML_KEYS)
def test_every_key_in_the_settings_file_is_read(name):
    """A key in configs/settings.toml that no code reads looks like a setting and does nothing (the log store's
    bundle_include_raw once was one). Set to a value no setting takes as-is, each must stop start-up with an
    error naming it (or quoting the value) or change what the gateway, or logdb for LOGDB_*, runs with."""
    def effective(settings):
        return LogStoreSettings.from_mapping(settings.logdb, {}) if name.startswith("LOGDB_") else settings

    base = effective(_load())
    try:
        changed = effective(_load(**{name: PROBE}))
    except ConfigError as error:
        assert name.lower() in str(error).lower() or PROBE in str(error), f"{name}: the error names something else: {error}"
        return
    assert changed != base, f"{name} is in configs/settings.toml but setting it changes nothing"


def test_every_provider_setting_is_in_the_settings_file():
    """Each provider key the code reads (per-provider overrides of [upstream] included) is shown in
    configs/settings.toml, as a key or in a comment: `api_key` and the overrides were read but written nowhere."""
    from aiproxy.config import ProviderSettings

    text = SETTINGS_TOML.read_text(encoding="utf-8")
    derived = {"name", "max_answer_bytes"}  # the table's name; MAX_BODY_BYTES + 1 MiB
    missing = {key for key in ProviderSettings.__dataclass_fields__ if key not in derived
               and not re.search(rf"\b{key}\b", text)}
    assert not missing, f"provider keys read but not in configs/settings.toml: {missing}"
