"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time


class ProgressBar:
    def __init__(self, total: int, label: str, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and total > 0
        self.total = total
        self.label = label
        self.done = 0
        self._drawn = 0.0
        self._lock = threading.Lock()

    def advance(self, amount: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done += amount
            now = time.monotonic()
            if now - self._drawn >= 0.1 or self.done >= self.total:
                self._drawn = now
                fraction = min(1.0, self.done / self.total)
                bar = "#" * int(fraction * 30)
                self.stream.write(f"\r{self.label} [{bar:<30}] {fraction:6.1%}")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
