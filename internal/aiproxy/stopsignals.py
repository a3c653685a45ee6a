"""The signals that stop a gateway, and those a workers' parent sends its cells.

Operators stop it with SIGTERM, SIGINT or SIGHUP (all graceful). In a worker cell the parent asks
with SIGUSR1 (drain) and SIGUSR2 (at once) rather than by repeating the operator's signal: a cell
often gets that signal directly too (a terminal's Ctrl-C reaches the whole process group, systemd
signals the whole cgroup), and must not count one signal twice as "stop at once". Until a process
has its handlers, these signals are blocked, so one sent during start-up waits for them instead of
killing the process.
"""

import os
import signal
import sys
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DRAIN_SIGNAL = signal.SIGUSR1  # parent -> cell: stop accepting, finish in-flight work
STOP_NOW_SIGNAL = signal.SIGUSR2  # parent -> cell: stop at once
# Blocked while a cell starts (and, for the stop signals, while any process starts); unblocked once its
# handlers are in place.
CELL_SIGNALS = (*STOP_SIGNALS, DRAIN_SIGNAL, STOP_NOW_SIGNAL)


def handled_stop_signals() -> tuple[signal.Signals, ...]:
    """STOP_SIGNALS less those this process started with ignored: `nohup` ignores SIGHUP (so does a
    shell for a background job's SIGINT without job control), and the gateway must then survive
    them. Ask before installing any handler; an ignored signal is still ignored in a spawned cell."""
    return tuple(sig for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN)


# The same signal again this soon is the one stop request delivered twice, not a second signal: a
# parent relays it to its child (GNU make does SIGTERM) that got it from the process group as well
# (systemd's KillMode=control-group, `timeout`, `kill -- -PGID`): `make run` then cut every request in
# flight instead of draining them.
RELAYED_WITHIN_SECONDS = 0.25


class StopSignals:
    """Counts the operator's stop signals: the first asks for a drain, a later one to stop at once."""

    def __init__(self) -> None:
        self._first: tuple[int, float] | None = None  # the first stop signal and when it came

    def second(self, sig: int, at: float | None = None) -> bool | None:
        """False for the first signal, True for a second one, None for a copy of the first (`at`:
        when it came, time.monotonic(); default now)."""
        at = time.monotonic() if at is None else at
        if self._first is None:
            self._first = (sig, at)
            return False
        if self._first[0] == sig and at - self._first[1] < RELAYED_WITHIN_SECONDS:
            return None
        return True


def settled_exit(code: int) -> int:
    """`code`, with stdout/stderr let go when they cannot be written any more: after the terminal
    hung up (SIGHUP, a graceful stop), Python's own last flush of them would fail and turn a clean
    stop into exit code 120."""
    for name in ("stdout", "stderr"):
        try:
            getattr(sys, name).flush()
        except (OSError, ValueError):
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - stays open until the interpreter ends
    return code
