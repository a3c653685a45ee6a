"""Cancel a gRPC call whose server has gone quiet: a stream that stalls sends no error, so without
this the client would wait for it for as long as the connection stays up."""

from __future__ import annotations

import threading
import time

from aiproxy.logstore.bundles.transfer import TransferError


class IdleWatch:
    """Once started, cancels `call` when `seconds` pass without touch(); `fired` tells why the call ended."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.fired = seconds, False
        self._last, self._closed = time.monotonic(), threading.Event()

    def start(self, call) -> IdleWatch:
        self.touch()
        threading.Thread(target=self._watch, args=(call,), daemon=True, name="idle-watch").start()
        return self

    def touch(self) -> None:
        self._last = time.monotonic()

    def close(self) -> None:
        self._closed.set()

    def idle_error(self, what: str, outcome: str) -> TransferError:
        return TransferError(f"the server {what} for {self.seconds:g} s (--idle-timeout); {outcome}")

    def _watch(self, call) -> None:
        while not self._closed.wait(max(0.0, self._last + self.seconds - time.monotonic())):
            if time.monotonic() - self._last >= self.seconds:
                self.fired = True
                call.cancel()
                return

    def __enter__(self) -> IdleWatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
