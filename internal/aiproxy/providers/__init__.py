"""Upstream providers, one module per wire API, all behind aiproxy.providers.base.Provider."""

from __future__ import annotations

from aiproxy.config import ProviderSettings
from aiproxy.providers.base import Provider


def build_provider(settings: ProviderSettings) -> Provider:
    """Instantiate the provider for a settings entry (imports lazily: each kind pulls its own deps)."""
    if settings.kind in ("openai", "openrouter"):
        from aiproxy.providers.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider(settings)
    if settings.kind == "gemini":
        from aiproxy.providers.gemini import GeminiProvider

        return GeminiProvider(settings)
    if settings.kind == "mock":
        from aiproxy.providers.mock import MockProvider

        return MockProvider(settings)
    raise ValueError(f"unknown provider kind {settings.kind!r}")
