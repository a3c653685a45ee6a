"""Typed view of the LOGDB_* settings.

`aiproxy.config` hands every LOGDB_* value over as-is (strings when they come from the
environment); this module is the one place that coerces them and fills in defaults, so the
CLI also works without a settings file.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiproxy.config import ConfigError, as_bool, as_int
from aiproxy.logstore.partitions import GRANULARITIES


class LogStoreConfigError(ConfigError, ValueError):
    """A LOGDB_* value that cannot be used (a ConfigError: the gateway stops with this line)."""


def _bool(name: str, value: Any) -> bool:
    return as_bool(f"logdb_{name}", value, LogStoreConfigError)


def _int(name: str, value: Any, minimum: int | None) -> int:
    return as_int(f"logdb_{name}", value, minimum, LogStoreConfigError)


MIN_CACHE_KB = 64
# A dialog window: N seconds, Ns, Nm or Nh, in any case (the seed also read `…ms` as one second).
WINDOW = re.compile(r"(\d+)([smh]?)|.*ms", re.IGNORECASE)


def _window(value: Any) -> str:
    """LOGDB_DIALOG_WINDOW, new here: unlike the seed's --window, a value it cannot read is an error,
    not 30 minutes."""
    text = str(value).strip()
    if not WINDOW.fullmatch(text):
        raise LogStoreConfigError(f"LOGDB_DIALOG_WINDOW={text!r} is not a window (use Ns, Nm, Nh or seconds, e.g. 30m)")
    return text


def _cache_kb(value: Any) -> int:
    """0 leaves SQLite's own page cache size (the seed's default); else at least MIN_CACHE_KB."""
    number = _int("sqlite_cache_kb", value, 0)
    if 0 < number < MIN_CACHE_KB:
        raise LogStoreConfigError(f"setting LOGDB_SQLITE_CACHE_KB={number} must be 0 (SQLite's default) or at least {MIN_CACHE_KB}")
    return number


@dataclass(frozen=True, slots=True)
class LogStoreSettings:
    enabled: bool = False
    fts_enabled: bool = True
    grouping_enabled: bool = True
    partition_granularity: str = "daily"
    dir: str = "logs/db"
    memory_mb: int = 256
    batch_rows: int = 2000
    batch_kb: int = 4096
    import_parallelism: int = 2
    server_id: str = ""
    env: str = ""
    busy_timeout_ms: int = 5000
    wal_autocheckpoint_pages: int = 1000
    # Page cache per connection. Small on purpose: a process keeps up to MAX_OPEN partition
    # connections per thread, and the OS page cache holds the files anyway. 0: SQLite's default.
    sqlite_cache_kb: int = 1024
    dialog_window: str = "30m"
    dialog_lookback_days: int = 30
    live_interval_s: float = 1.0
    # The default of `logdb bundle create --include-raw`.
    bundle_include_raw: bool = False

    @property
    def base(self) -> Path:
        return Path(self.dir).absolute()

    @classmethod
    def from_mapping(cls, raw: dict[str, Any] | None, environ: dict[str, str] | None = None) -> LogStoreSettings:
        """Build from `Settings.logdb` (or nothing); LOGDB_* environment variables fill gaps."""
        environ = dict(os.environ if environ is None else environ)
        # An empty variable (a `.env` line `LOGDB_BATCH_ROWS=`) is unset, as in the settings file.
        values: dict[str, Any] = {
            k[len("LOGDB_"):].lower(): v for k, v in environ.items() if k.startswith("LOGDB_") and v.strip()
        }
        values.update({str(k).lower(): v for k, v in (raw or {}).items() if v is not None and v != ""})
        if "env" not in values and environ.get("ENV"):
            values["env"] = environ["ENV"]
        defaults = cls()
        granularity = str(values.get("partition_granularity", defaults.partition_granularity)).strip().lower()
        if granularity not in GRANULARITIES:
            raise LogStoreConfigError(
                f"LOGDB_PARTITION_GRANULARITY={granularity!r} is unknown (use {', '.join(GRANULARITIES)})"
            )
        raw_interval = values.get("live_interval_s", defaults.live_interval_s)
        try:
            interval = float(raw_interval)
        except ValueError:
            interval = math.nan
        if not math.isfinite(interval):  # nan became the 0.05 s floor; inf stopped the live ingest for good
            raise LogStoreConfigError(f"setting LOGDB_LIVE_INTERVAL_S={raw_interval!r} is not a number of seconds")
        return cls(
            enabled=_bool("enabled", values.get("enabled", defaults.enabled)),
            fts_enabled=_bool("fts_enabled", values.get("fts_enabled", defaults.fts_enabled)),
            grouping_enabled=_bool("grouping_enabled", values.get("grouping_enabled", defaults.grouping_enabled)),
            partition_granularity=granularity,
            dir=str(values.get("dir") or defaults.dir),
            memory_mb=_int("memory_mb", values.get("memory_mb", defaults.memory_mb), 8),
            batch_rows=_int("batch_rows", values.get("batch_rows", defaults.batch_rows), 1),
            batch_kb=_int("batch_kb", values.get("batch_kb", defaults.batch_kb), 1),
            import_parallelism=_int("import_parallelism", values.get("import_parallelism", defaults.import_parallelism), 1),
            server_id=str(values.get("server_id") or "").strip(),
            env=str(values.get("env") or "").strip(),
            busy_timeout_ms=_int("busy_timeout_ms", values.get("busy_timeout_ms", defaults.busy_timeout_ms), 0),
            # Negative is 0 (no automatic checkpoints), as in the seed and in SQLite.
            wal_autocheckpoint_pages=max(0, _int(
                "wal_autocheckpoint_pages", values.get("wal_autocheckpoint_pages", defaults.wal_autocheckpoint_pages), None
            )),
            sqlite_cache_kb=_cache_kb(values.get("sqlite_cache_kb", defaults.sqlite_cache_kb)),
            dialog_window=_window(values.get("dialog_window") or defaults.dialog_window),
            dialog_lookback_days=_int(
                "dialog_lookback_days", values.get("dialog_lookback_days", defaults.dialog_lookback_days), 0
            ),
            live_interval_s=max(0.05, interval),
            bundle_include_raw=_bool("bundle_include_raw", values.get("bundle_include_raw", defaults.bundle_include_raw)),
        )
