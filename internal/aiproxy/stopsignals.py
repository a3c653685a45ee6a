"""The signals that stop a gateway, and those a workers' parent sends its cells.

Operators stop it with SIGTERM, SIGINT or SIGHUP (all graceful). In a worker cell the parent asks
with SIGUSR1 (drain) and SIGUSR2 (at once) rather than by repeating the operator's signal: a cell
often gets that signal directly too (a terminal's Ctrl-C reaches the whole process group, systemd
signals the whole cgroup), and must not count one signal twice as "stop at once". Until a process
has its handlers, these signals are blocked, so one sent during start-up waits for them instead of
killing the process.
"""

import signal

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
