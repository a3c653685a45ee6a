"""EVENT_LOOP: auto picks uvloop where installed, asyncio keeps the standard loop, and asking
for a missing uvloop is a clear configuration error."""

from __future__ import annotations

import asyncio
import sys

import pytest

from aiproxy.config import ConfigError
from aiproxy.eventloop import loop_factory


def _loop_class(choice: str) -> str:
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(_running_loop_class())


async def _running_loop_class() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_keeps_the_standard_loop() -> None:
    expected = "asyncio" if sys.platform == "win32" else "aiproxy.eventloop"  # the selector loop, accept mended
    assert _loop_class("asyncio").startswith(expected)


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_auto_and_uvloop_run_on_uvloop() -> None:
    assert _loop_class("auto").startswith("uvloop")
    assert _loop_class("uvloop").startswith("uvloop")


def test_uvloop_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert loop_factory("auto") is loop_factory("asyncio")
    with pytest.raises(ConfigError, match="EVENT_LOOP=uvloop"):
        loop_factory("uvloop")
