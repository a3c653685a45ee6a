import pytest

from aiproxy.config import ProviderSettings
from aiproxy.providers.gemini import GeminiProvider
from aiproxy.testing.fake_gemini import DEFAULT_KEY, FakeGemini


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def gemini_settings():
    """Settings for a GeminiProvider pointed at a fake: `gemini_settings(fake, api_key=…, read_timeout=…)`."""

    def make(fake: FakeGemini, **overrides) -> ProviderSettings:
        fields = {
            "name": "gemini",
            "kind": "gemini",
            "base_url": fake.base_url,
            "api_key": DEFAULT_KEY,
            "api_key_env": "GEMINI_API_KEY",
            **overrides,
        }
        return ProviderSettings(**fields)

    return make


@pytest.fixture
async def fake():
    async with FakeGemini() as server:
        yield server


@pytest.fixture
async def provider(fake, gemini_settings):
    gemini = GeminiProvider(gemini_settings(fake))
    yield gemini
    await gemini.aclose()
