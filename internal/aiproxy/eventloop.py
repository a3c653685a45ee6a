"""Which asyncio event loop a cell runs on. uvloop (libuv) is the default where it is installed:
measured on the gateway it takes 5-15 % off the CPU per request, most on streams, where the loop
handles a socket event per chunk (docs/benchmarks.md). `EVENT_LOOP=asyncio` keeps the standard loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiproxy.config import ConfigError


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for asyncio.Runner; None means the standard loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop, "
                              "or set EVENT_LOOP=auto)") from None
        return None
    return uvloop.new_event_loop
