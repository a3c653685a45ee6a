"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time


class ProgressBar:
    def __init__(self, total: int, label: str, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total
        self.label = label
        self.done = 0
        self._drawn = 0.0
        self._shown = False
        self._full = False  # 100% drawn: done can pass an estimated total, and a redraw per block would spam
        self._lock = threading.Lock()

    def advance(self, amount: int, total: int | None = None) -> None:
        """`amount` more done; `total` when the size becomes known only now (a pull learns it
        from the server's first message)."""
        if not self.enabled:
            return
        with self._lock:
            self.done += amount
            if total is not None:
                self.total = total
            now = time.monotonic()
            full = self.done >= self.total
            if self.total > 0 and not self._full and (now - self._drawn >= 0.1 or full):
                self._drawn, self._shown, self._full = now, True, full
                fraction = min(1.0, self.done / self.total)
                bar = "#" * int(fraction * 30)
                self.stream.write(f"\r{self.label} [{bar:<30}] {fraction:6.1%}")
                self.stream.flush()

    def close(self) -> None:
        if self._shown:
            self._shown = False
            self.stream.write("\n")
            self.stream.flush()

    # As a context manager the bar ends on every way out: Ctrl-C's or an error's line starts a line of its own.
    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
