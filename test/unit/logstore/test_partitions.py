from datetime import date
from pathlib import Path

import pytest

from aiproxy.logstore.partitions import day_bounds, discover, parse_day, partition_path


@pytest.mark.parametrize(
    ("day", "granularity", "expected"),
    [
        (date(2025, 9, 10), "daily", "2025/09/ai_proxy_20250910.sqlite3"),
        (date(2025, 1, 2), "weekly", "2025/W01/ai_proxy_2025W01.sqlite3"),
        (date(2024, 12, 30), "weekly", "2025/W01/ai_proxy_2025W01.sqlite3"),  # ISO year
        (date(2025, 9, 10), "monthly", "2025/M09/ai_proxy_202509.sqlite3"),
    ],
)
def test_partition_paths_follow_the_seed_layout(day, granularity, expected):
    assert partition_path(Path("/b"), day, granularity) == Path("/b") / expected


def test_discover_finds_every_granularity_once_and_filters_by_overlap(tmp_path):
    for rel in (
        "2025/09/ai_proxy_20250910.sqlite3",
        "2025/W37/ai_proxy_2025W37.sqlite3",  # 2025-09-08 .. 09-14
        "2025/M08/ai_proxy_202508.sqlite3",
        "2025/09/not_a_partition.sqlite3",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    (tmp_path / "control.sqlite3").touch()
    names = [p.path.name for p in discover(tmp_path)]
    assert names == ["ai_proxy_202508.sqlite3", "ai_proxy_2025W37.sqlite3", "ai_proxy_20250910.sqlite3"]
    in_week = [p.path.name for p in discover(tmp_path, date(2025, 9, 12), date(2025, 9, 13))]
    assert in_week == ["ai_proxy_2025W37.sqlite3"]
    assert [p.path.name for p in discover(tmp_path, date(2025, 8, 31), date(2025, 8, 31))] == ["ai_proxy_202508.sqlite3"]


def test_parse_day_rejects_garbage_with_a_readable_message():
    assert parse_day("2025-09-10") == date(2025, 9, 10)
    for garbage in ("10/09/2025", "20250910", "2025-W37", "2025-W37-3", "2025-09-31", "２０２５-09-10"):
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            parse_day(garbage)


def test_day_bounds_cover_whole_utc_days():
    start, end = day_bounds(date(2025, 9, 10), date(2025, 9, 10))
    assert end - start == 86400 and start == 1757462400
