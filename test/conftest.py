"""Shared fixtures: one fake upstream and one real gateway process per test session. Every
response the SDK clients receive is validated against OpenAI's OpenAPI schemas at teardown."""

from __future__ import annotations

import httpx
import pytest

from aiproxy.testing.fake_openai import FakeOpenAIUpstream
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.recording import AsyncRecordingTransport, Captured, RecordingTransport


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


@pytest.fixture(scope="session")
def openai_schemas():
    from aiproxy.testing.openapi import OpenAISchemas

    return OpenAISchemas()


@pytest.fixture()
def captured(openai_schemas):
    """Responses seen by the SDK clients of this test; all must match OpenAI's schemas."""
    log: list[Captured] = []
    yield log
    checked = 0
    for response in log:
        for schema, document in response.documents():
            openai_schemas.validate(schema, document)
            checked += 1
    assert not log or checked, "responses were captured but none could be validated"


@pytest.fixture()
def client(gateway, captured):
    openai = pytest.importorskip("openai")
    http_client = httpx.Client(transport=RecordingTransport(captured))
    with openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20,
                       http_client=http_client) as sdk:
        yield sdk


@pytest.fixture()
def async_client(gateway, captured):
    openai = pytest.importorskip("openai")
    http_client = httpx.AsyncClient(transport=AsyncRecordingTransport(captured))
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20,
                              http_client=http_client)
