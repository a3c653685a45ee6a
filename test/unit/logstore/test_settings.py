import pytest

from aiproxy.logstore.dialogs import parse_window
from aiproxy.logstore.settings import LogStoreConfigError, LogStoreSettings


def test_strings_from_the_environment_are_coerced():
    s = LogStoreSettings.from_mapping({"enabled": "true", "memory_mb": "64", "partition_granularity": "Weekly"}, {})
    assert s.enabled is True and s.memory_mb == 64 and s.partition_granularity == "weekly"


def test_environment_fills_what_the_settings_do_not_say():
    s = LogStoreSettings.from_mapping({}, {"LOGDB_SERVER_ID": " srv-9 ", "LOGDB_FTS_ENABLED": "false"})
    assert s.server_id == "srv-9" and s.fts_enabled is False


@pytest.mark.parametrize(
    "raw", [{"enabled": "maybe"}, {"memory_mb": "lots"}, {"partition_granularity": "hourly"}, {"batch_rows": "0"},
            {"live_interval_s": "soon"}, {"live_interval_s": "nan"}, {"live_interval_s": "inf"}]
)
def test_bad_values_name_the_setting(raw):
    with pytest.raises(LogStoreConfigError, match="LOGDB_"):
        LogStoreSettings.from_mapping(raw, {})


@pytest.mark.parametrize("window", ["2d", "bad", "-5m", "1.5h", "30 minutes"])
def test_a_dialog_window_setting_that_cannot_be_read_names_the_setting(window):
    """LOGDB_DIALOG_WINDOW=2d silently grouped with 30 minutes: the seed's fallback for --window,
    which this setting (new here) need not copy, hid the typo as the seed's defaults did."""
    with pytest.raises(LogStoreConfigError, match="LOGDB_DIALOG_WINDOW='"):
        LogStoreSettings.from_mapping({}, {"LOGDB_DIALOG_WINDOW": window})


@pytest.mark.parametrize("window", ["2h", "45S", "90", " 10m "])
def test_a_dialog_window_setting_in_the_window_format_is_kept(window):
    assert LogStoreSettings.from_mapping({"dialog_window": window}, {}).dialog_window == window.strip()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("45s", 45), ("2h", 7200), ("90", 90), ("5ms", 1), ("bad", 1800), ("0s", 1), ("10M", 600)],
)
def test_window_parsing_keeps_the_seed_rules(text, seconds):
    assert parse_window(text) == seconds


def test_seed_values_that_meant_a_default_still_do():
    """The seed's LOGDB_SQLITE_CACHE_KB=0 (its default) is SQLite's own cache size, a negative
    LOGDB_WAL_AUTOCHECKPOINT_PAGES is 0 (no automatic checkpoints), and an empty variable (a
    `.env` line `LOGDB_BATCH_ROWS=`) is unset: none of them stops logdb or the gateway."""
    s = LogStoreSettings.from_mapping(
        {}, {"LOGDB_SQLITE_CACHE_KB": "0", "LOGDB_WAL_AUTOCHECKPOINT_PAGES": "-1", "LOGDB_BATCH_ROWS": "",
             "LOGDB_PARTITION_GRANULARITY": " ", "LOGDB_ENABLED": ""}
    )
    defaults = LogStoreSettings()
    assert (s.sqlite_cache_kb, s.wal_autocheckpoint_pages) == (0, 0)
    assert (s.batch_rows, s.partition_granularity, s.enabled) == (defaults.batch_rows, "daily", False)


def test_a_cache_of_0_leaves_sqlites_default(tmp_path):
    from aiproxy.logstore.database import open_database

    settings = LogStoreSettings.from_mapping({"dir": str(tmp_path), "sqlite_cache_kb": 0}, {})
    db = open_database(tmp_path / "p.sqlite3", settings)
    assert db.execute_sql("PRAGMA cache_size").fetchone()[0] == -2000  # SQLite's default, 2 MB
    db.close()
