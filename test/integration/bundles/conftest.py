"""A store with three days of conversations and a bundle of it, per test."""

from datetime import date

import pytest

from aiproxy.logstore.bundles.create import create_bundle
from aiproxy.testing.bundles import filled_store


@pytest.fixture()
def source_store(tmp_path):
    return filled_store(tmp_path / "a", server_id="srv-a", days=3)


@pytest.fixture()
def bundle(tmp_path, source_store):
    result = create_bundle(source_store, date(2025, 9, 1), date(2025, 9, 30), tmp_path / "a.tgz")
    source_store.close()
    return result.path
