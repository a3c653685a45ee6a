"""A store with three days of conversations and a bundle of it, per test; a weekly bundle as
the seed wrote it (the week's partition archived and listed once per day)."""

import io
import sys
from datetime import date

import pytest

from aiproxy.logstore.bundles.create import create_bundle
from aiproxy.testing.bundles import filled_store, seed_weekly


@pytest.fixture()
def source_store(tmp_path):
    return filled_store(tmp_path / "a", server_id="srv-a", days=3)


@pytest.fixture()
def bundle(tmp_path, source_store):
    result = create_bundle(source_store, date(2025, 9, 1), date(2025, 9, 30), tmp_path / "a.tgz")
    source_store.close()
    return result.path


@pytest.fixture()
def seed_weekly_bundle(tmp_path):
    store = filled_store(tmp_path / "w", server_id="srv-w", days=3, topic="weaving", partition_granularity="weekly")
    result = create_bundle(store, date(2025, 9, 1), date(2025, 9, 30), tmp_path / "w.tgz")
    store.close()
    return seed_weekly(result.path, tmp_path / "seed-weekly.tgz")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture()
def terminal_stderr(monkeypatch):
    """Call it in the test body (pytest's capture resets sys.stderr after fixtures ran): stderr
    becomes a terminal, where commands draw their progress bars; read it with getvalue()."""

    def install() -> _Terminal:
        stream = _Terminal()
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    return install
