"""The shared httpx client factory: one AsyncClient per provider, explicit timeouts and pool limits."""

from __future__ import annotations

import functools
import ssl

import httpx

from aiproxy.config import ProviderSettings


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One CA bundle load for every provider (each load costs tens of milliseconds)."""
    return ssl.create_default_context()


def make_http_client(settings: ProviderSettings, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.read_timeout,
        pool=settings.connect_timeout,
    )
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
    )
    return httpx.AsyncClient(
        base_url=settings.base_url,
        headers=headers or {},
        timeout=timeout,
        limits=limits,
        # Upstreams are configured by the operator; never pick up proxies from the environment.
        trust_env=False,
        verify=_tls_context(),
    )
