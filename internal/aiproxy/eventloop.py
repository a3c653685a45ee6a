"""Which asyncio event loop a cell runs on. uvloop (libuv) is the default where it is installed:
measured on the gateway it takes 5-15 % off the CPU per request, most on streams, where the loop
handles a socket event per chunk (docs/benchmarks.md). `EVENT_LOOP=asyncio` keeps the standard loop."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

from loguru import logger

from aiproxy.config import ConfigError

# asyncio's words when accept() fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
ACCEPT_WARNING_SECONDS = 60.0


class SelectorEventLoop(asyncio.SelectorEventLoop):
    """The standard loop, out of file descriptors without spinning or flooding the log.

    Its accept loop, out of descriptors, went on trying the next connection up to the listen backlog
    (128) times, each failure logging an error with its traceback and scheduling one more retry
    (CPython gh-151615): ~1,000 app-log lines a second and a quarter of a core
    for as long as the descriptors stayed used up. Here each readiness accepts one connection (the
    loop comes back at once while more wait), so a failure is one retry a second, and it is logged
    as one warning a minute without the traceback. uvloop sheds such connections itself (libuv
    accepts and closes them) and logs nothing."""

    _accept_warned_at = -ACCEPT_WARNING_SECONDS

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args, **kwargs):
        super()._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)

    def call_exception_handler(self, context: dict) -> None:
        if context.get("message") != _ACCEPT_EXHAUSTED:
            return super().call_exception_handler(context)
        now = time.monotonic()
        if now - self._accept_warned_at >= ACCEPT_WARNING_SECONDS:
            self._accept_warned_at = now
            logger.warning("cannot accept connections: new ones wait until open ones close (at most one such"
                           " line a minute); raise the gateway's open-file limit", error=str(context.get("exception")))


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for asyncio.Runner; None means the platform's standard loop (Windows' proactor)."""
    standard = SelectorEventLoop if sys.platform != "win32" else None
    if choice == "asyncio":
        return standard
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop, "
                              "or set EVENT_LOOP=auto)") from None
        return standard
    return uvloop.new_event_loop
