"""Partition layout: which file holds which UTC day, and which files exist for a date range.

daily   <base>/YYYY/MM/ai_proxy_YYYYMMDD.sqlite3
weekly  <base>/YYYY/WNN/ai_proxy_YYYYWNN.sqlite3   (ISO year and week)
monthly <base>/YYYY/MNN/ai_proxy_YYYYMM.sqlite3

Readers never assume one granularity: they discover every partition file under the base, so
a store holding daily files next to compacted weekly or monthly ones is read whole, and each
file is visited once.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

CONTROL_DB = "control.sqlite3"

_NAME = re.compile(r"^ai_proxy_(?:(\d{4})(\d{2})(\d{2})|(\d{4})W(\d{2})|(\d{4})(\d{2}))\.sqlite3$")


def partition_path(base: Path, day: date, granularity: str = "daily") -> Path:
    if granularity == "weekly":
        year, week, _ = day.isocalendar()
        return Path(base) / f"{year:04d}" / f"W{week:02d}" / f"ai_proxy_{year:04d}W{week:02d}.sqlite3"
    if granularity == "monthly":
        return Path(base) / f"{day.year:04d}" / f"M{day.month:02d}" / f"ai_proxy_{day.year:04d}{day.month:02d}.sqlite3"
    if granularity == "daily":
        return Path(base) / f"{day.year:04d}" / f"{day.month:02d}" / f"ai_proxy_{day:%Y%m%d}.sqlite3"
    raise ValueError(f"unknown partition granularity {granularity!r}")


GRANULARITIES = ("daily", "weekly", "monthly")


def holding(base: Path, day: date) -> list[Path]:
    """The partition files that exist for `day`, whatever their granularity: three stat calls
    instead of discovering the whole store."""
    return [path for g in GRANULARITIES if (path := partition_path(base, day, g)).is_file()]


def control_path(base: Path) -> Path:
    return Path(base) / CONTROL_DB


@dataclass(frozen=True, slots=True, order=True)
class PartitionFile:
    first_day: date
    last_day: date
    path: Path

    def overlaps(self, since: date | None, to: date | None) -> bool:
        return (since is None or self.last_day >= since) and (to is None or self.first_day <= to)


def partition_span(name: str) -> tuple[date, date] | None:
    """The first and last UTC day a partition file name covers; None for another name."""
    m = _NAME.match(name)
    if not m:
        return None
    try:
        if m.group(1):
            day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            return day, day
        if m.group(4):
            monday = date.fromisocalendar(int(m.group(4)), int(m.group(5)), 1)
            return monday, monday + timedelta(days=6)
        year, month = int(m.group(6)), int(m.group(7))
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    except ValueError:
        return None


def is_partition_name(name: str) -> bool:
    """ai_proxy_YYYYMMDD / _YYYYWNN / _YYYYMM.sqlite3 naming a real day, week or month."""
    return partition_span(name) is not None


def discover(base: Path, since: date | None = None, to: date | None = None) -> list[PartitionFile]:
    """Every partition file under `base` overlapping [since, to], oldest first."""
    found = []
    for path in Path(base).glob("[0-9][0-9][0-9][0-9]/*/ai_proxy_*.sqlite3"):
        span = partition_span(path.name)
        if span is not None:
            part = PartitionFile(span[0], span[1], path)
            if part.overlaps(since, to):
                found.append(part)
    return sorted(found)


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_day(text: str) -> date:
    """A `YYYY-MM-DD` argument; ValueError with a readable message otherwise. The format is checked
    first: date.fromisoformat also takes `20261126` and ISO weeks such as `2026-W48`."""
    day = text.strip()
    if _DAY.fullmatch(day):
        try:
            return date.fromisoformat(day)
        except ValueError:
            pass
    raise ValueError(f"invalid date {text!r}: use YYYY-MM-DD")


def check_day_order(since: date | None, to: date | None, names: tuple[str, str] = ("since", "to")) -> None:
    """ValueError for days the wrong way round, which would read as a store without those days (an
    empty answer); `names` are the two as the caller's user writes them."""
    if since is not None and to is not None and since > to:
        raise ValueError(f"{names[0]} {since} is after {names[1]} {to}: swap them")


def utc_today() -> date:
    return datetime.now(UTC).date()


def day_of(ts: int) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def day_bounds(since: date | None, to: date | None) -> tuple[int | None, int | None]:
    """Epoch-second bounds [start, end) of an inclusive UTC date range."""
    start = int(datetime(since.year, since.month, since.day, tzinfo=UTC).timestamp()) if since else None
    end = int(datetime(to.year, to.month, to.day, tzinfo=UTC).timestamp()) + 86400 if to else None
    return start, end
