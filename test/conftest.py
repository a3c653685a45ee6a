"""Shared fixtures: one fake upstream and one real gateway process per test session."""

from __future__ import annotations

import pytest

from aiproxy.testing.fake_openai import FakeOpenAIUpstream
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess


@pytest.fixture(scope="session")
def upstream():
    server = FakeOpenAIUpstream().start()
    yield server
    server.stop()


@pytest.fixture()
def fake(upstream):
    """The session's fake upstream, with an empty script and history for this test."""
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture(scope="session")
def gateway(upstream, tmp_path_factory):
    with GatewayProcess(tmp_path_factory.mktemp("gateway"), upstream_url=upstream.base_url) as gw:
        yield gw


@pytest.fixture()
def client(gateway):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.fixture()
def async_client(gateway):
    openai = pytest.importorskip("openai")
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
