"""Fixtures of the end-to-end tests that use more than one module."""

from __future__ import annotations

import pytest

from aiproxy.testing.fake_gemini import FakeGemini
from aiproxy.testing.gateway import UPSTREAM_KEYS


@pytest.fixture(scope="module")
def gemini_server():
    """A fake Gemini API that accepts the test gateway's key, for this module's gateway."""
    with FakeGemini(UPSTREAM_KEYS["GEMINI_API_KEY"]) as server:
        yield server
