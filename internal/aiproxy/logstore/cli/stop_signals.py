"""logdb ends on SIGTERM and SIGHUP as on Ctrl-C: the signal raises Stopped (a KeyboardInterrupt) in
the main thread, also in the middle of a long SQLite statement (which it aborts: logstore.stoppable),
so every cleanup on the way out runs (temporary files of `merge` and `bundle
create` removed, SQLite transactions rolled back, the progress bar ended) and main reports it.

SIGTERM is what `kill`, systemd, `docker stop` and timeout(1) send; SIGHUP comes when the terminal
or SSH session goes away. Left at their default, either killed logdb on the spot, leaving its
temporary files behind. SIGHUP is a stop here, as for the gateway and for tools that write files
in place (git removes its lock and temporary files on SIGHUP, SIGINT and SIGTERM; rsync its partial
file); a signal logdb started with ignored (`nohup` ignores SIGHUP) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from aiproxy.logstore.stoppable import stop_raised
from aiproxy.stopsignals import StopSignals, handled_stop_signals


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; `signum` says which (the exit code is 128 + signum, as a shell reports it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM, SIGHUP and SIGINT raise Stopped in the main thread; the
    handlers before it come back afterwards (main() also runs inside test processes)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    stops = StopSignals()

    def on_signal(signum: int, _frame) -> None:
        # The same request delivered twice (timeout(1) signals its child and then the child's process
        # group) must not cut short the cleanup the first one started; a later, second signal does.
        if stops.second(signum) is not None:
            raise stop_raised(Stopped(signum))  # also when it lands mid-statement (logstore.stoppable)

    previous = {sig: signal.signal(sig, on_signal) for sig in handled_stop_signals()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_raised(None)
