"""Shared fixtures: one fake upstream and one real gateway process per test session. Every
response the SDK clients receive is validated against OpenAI's OpenAPI schemas at teardown."""

from __future__ import annotations

import signal

import httpx
import pytest

from aiproxy.testing.fake_openai import FakeOpenAIUpstream
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.recording import AsyncRecordingTransport, Captured, RecordingTransport

STOP_AND_CELL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def _signal_handlers_left_as_found():
    """A test that ran a cell in-process (`_run_cell` ignores the stop signals as it ends) left SIGTERM,
    SIGINT and SIGHUP ignored in pytest itself: every gateway started later inherited that, took it for
    `nohup` and ignored SIGTERM, so the shutdown tests after it hung (with `pytest test/unit test/e2e`)."""
    before = {sig: signal.getsignal(sig) for sig in STOP_AND_CELL_SIGNALS}
    yield
    changed = [sig.name for sig, handler in before.items() if signal.getsignal(sig) != handler]
    for sig, handler in before.items():
        signal.signal(sig, handler)
    assert not changed, f"the test changed the handlers of {', '.join(changed)} and did not restore them"


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
