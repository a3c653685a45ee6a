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
    "raw", [{"enabled": "maybe"}, {"memory_mb": "lots"}, {"partition_granularity": "hourly"}, {"batch_rows": "0"}]
)
def test_bad_values_name_the_setting(raw):
    with pytest.raises(LogStoreConfigError, match="LOGDB_"):
        LogStoreSettings.from_mapping(raw, {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("45s", 45), ("2h", 7200), ("90", 90), ("5ms", 1), ("bad", 1800), ("0s", 1), ("10M", 600)],
)
def test_window_parsing_keeps_the_seed_rules(text, seconds):
    assert parse_window(text) == seconds
