"""Settings: dynaconf in, frozen dataclasses out. The only package that touches dynaconf."""

from aiproxy.config.settings import (
    ConfigError,
    ProviderSettings,
    Settings,
    TLSSettings,
    as_bool,
    as_int,
    host_port,
    load_settings,
    parse_key_list,
    read_config_text,
)

__all__ = ["as_bool", "as_int", "host_port", "ConfigError", "ProviderSettings", "Settings", "TLSSettings", "load_settings", "parse_key_list", "read_config_text"]
