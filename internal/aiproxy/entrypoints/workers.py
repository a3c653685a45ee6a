"""`--workers N`: the parent process starts N cells and supervises them.

- A cell that dies is logged (pid, exit code or signal) and started again. One that dies within
  STARTUP_WINDOW_SECONDS of its start MAX_STARTUP_FAILURES times in a row is not: the gateway
  stops and exits 1, rather than loop forever on a start-up crash. A cell that stops on a
  configuration error (exit code 2, its one line already printed) stops the gateway with 2.
- SIGTERM, SIGINT or SIGHUP: the parent asks every cell to drain (SIGUSR1), a second signal asks
  them to stop at once (SIGUSR2); see aiproxy.stopsignals for why not the operator's signal itself. Cells
  still running SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS later are killed.
- Exit code: 0 when every cell stopped cleanly; a cell that did not (a signal death counts) makes
  it 128 + the signal, or the cell's own exit code.
- Cells exit when the parent goes away, even by SIGKILL (die_with_parent), so that they never
  keep the ports from the next gateway.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing import connection, resource_tracker

from loguru import logger

from aiproxy.cell import internal_socket_path
from aiproxy.config import Settings
from aiproxy.stopsignals import (
    CELL_SIGNALS,
    DRAIN_SIGNAL,
    STOP_NOW_SIGNAL,
    STOP_SIGNALS,
    StopSignals,
    handled_stop_signals,
)

STARTUP_WINDOW_SECONDS = 10.0
MAX_STARTUP_FAILURES = 5
BACKOFF_SECONDS = (0.25, 0.5, 1.0, 2.0)  # before restarting a cell that died young, by failures in a row
STOP_MARGIN_SECONDS = 10.0
CLEAN_EXIT_RESTART_SECONDS = 1.0  # before restarting a cell that stopped cleanly, see Supervisor._died
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a cell: have the kernel send SIGTERM (a graceful stop) when the parent dies. Linux only;
    elsewhere, and as a second line, the cell polls getppid() (aiproxy.cell._watch_parent)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        sys.exit(0)


def describe_exit(code: int) -> dict[str, object]:
    if code < 0:
        return {"signal": signal.Signals(-code).name}
    return {"exit_code": code}


@dataclass
class _Cell:
    process: multiprocessing.process.BaseProcess
    started: float


class Supervisor:
    def __init__(self, settings: Settings, target) -> None:
        """target(settings, parent_pid) runs one cell in the child process."""
        self._settings = settings
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._cells: dict[int, _Cell] = {}
        self._restart_at: dict[int, float] = {}
        self._failures = [0] * settings.workers  # deaths soon after start, in a row, per slot
        self._signals: list[tuple[int, float]] = []  # each stop signal and when it came
        self._handled_signals = 0
        self._stop_signals = StopSignals()
        self._stop_started: float | None = None
        self._killed = False
        self._fatal: int | None = None  # an exit code decided by a failure, not by the cells' own codes
        self._final_codes: list[int] = []

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(wake_read, False)
        for sig in handled_stop_signals():
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(wake_write)  # a signal wakes the wait below at once
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by main() until these handlers
        resource_tracker.ensure_running()  # started later, it would unblock SIGTERM/SIGINT (see _start)
        logger.info("starting cells", workers=self._settings.workers)
        for slot in range(self._settings.workers):
            self._start(slot)
        try:
            while self._cells or self._restart_at:  # restarts are only due before a stop: it clears them
                self._handle_signals()
                sentinels = [cell.process.sentinel for cell in self._cells.values()]
                connection.wait([*sentinels, wake_read], timeout=self._timeout())
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
                self._handle_signals()
                self._reap()
                self._restart_due()
                self._kill_overdue()
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_read)
            os.close(wake_write)
        return self._exit_code()

    def _timeout(self) -> float:
        now = time.monotonic()
        times = [*self._restart_at.values()]
        if self._stop_started is not None and not self._killed:
            times.append(self._kill_time())
        return max(0.0, min([now + 1.0, *times]) - now)

    def _on_signal(self, signum, _frame) -> None:
        # handled in the loop: logging from a signal handler could deadlock
        self._signals.append((signum, time.monotonic()))

    def _handle_signals(self) -> None:
        while self._handled_signals < len(self._signals):
            signum, at = self._signals[self._handled_signals]
            name = signal.Signals(signum).name
            self._handled_signals += 1
            second = self._stop_signals.second(signum, at)
            if second is None:  # the first one's copy, relayed by a parent (make)
                continue
            if self._stop_started is None:
                self._begin_stop(f"signal {name}")
            else:
                logger.warning("stopping the cells at once", reason=f"second signal ({name})")
                self._send(STOP_NOW_SIGNAL)

    # -- cells -------------------------------------------------------------------------------

    def _start(self, slot: int) -> None:
        process = self._context.Process(target=self._target, args=(self._settings, os.getpid()),
                                        name=f"aiproxy-cell-{slot}")
        # The child inherits the blocked mask: a signal that comes before its handlers waits for them.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, CELL_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self._cells[slot] = _Cell(process, time.monotonic())
        logger.info("cell started", cell=slot, cell_pid=process.pid)

    def _send(self, sig: signal.Signals) -> None:
        for cell in self._cells.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(cell.process.pid, sig)

    def _begin_stop(self, reason: str) -> None:
        if self._stop_started is not None:
            return
        self._reap()  # a cell that died before the stop is a death (logged), not an unclean stop
        if self._stop_started is not None:  # that death began the stop itself (a configuration error)
            return
        self._stop_started = time.monotonic()
        self._restart_at.clear()
        logger.info("stopping the cells", reason=reason, grace_seconds=self._settings.shutdown_grace_seconds)
        self._send(DRAIN_SIGNAL)

    def _reap(self) -> None:
        for slot, cell in list(self._cells.items()):
            if self._cells.get(slot) is not cell:  # reaped (and closed) already, by the stop a death began
                continue
            code = cell.process.exitcode
            if code is None:
                continue
            del self._cells[slot]
            with contextlib.suppress(OSError):  # left behind by a cell that was killed
                os.unlink(internal_socket_path(cell.process.pid))
            if self._stop_started is not None:
                self._final_codes.append(code)
                if code != 0:
                    logger.error("cell did not stop cleanly", cell=slot, cell_pid=cell.process.pid, **describe_exit(code))
            else:
                self._died(slot, cell, code)
            cell.process.close()

    def _died(self, slot: int, cell: _Cell, code: int) -> None:
        lived = time.monotonic() - cell.started
        facts = {"cell": slot, "cell_pid": cell.process.pid, **describe_exit(code), "lived_seconds": round(lived, 3)}
        if code == 0:
            # It stopped cleanly on a stop signal of its own: systemd (KillMode=control-group) signals
            # every process of the service, and this process's own signal is then on its way; restarted
            # after a moment, unless that signal comes first (an operator who stopped one cell gets it back).
            logger.warning("cell stopped on a signal of its own; restarting it unless the gateway stops",
                           restart_in_seconds=CLEAN_EXIT_RESTART_SECONDS, **facts)
            self._restart_at[slot] = time.monotonic() + CLEAN_EXIT_RESTART_SECONDS
            return
        if code == 2:  # a configuration error: its one line is on stderr already, and a restart cannot help
            logger.error("cell stopped on a configuration error; stopping the gateway", **facts)
            self._fatal = 2
            self._begin_stop("a cell's configuration error")
            return
        self._failures[slot] = self._failures[slot] + 1 if lived < STARTUP_WINDOW_SECONDS else 0
        failures = self._failures[slot]
        if failures >= MAX_STARTUP_FAILURES:
            logger.error(f"cell died {failures} times in a row within {STARTUP_WINDOW_SECONDS:g} s of starting;"
                         " stopping the gateway (see the errors above)", **facts)
            self._fatal = 1
            self._begin_stop("a cell keeps dying at start-up")
            return
        delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1] if failures else 0.0
        logger.error("cell died; restarting it", restart_in_seconds=delay, **facts)
        self._restart_at[slot] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._start(slot)

    def _kill_time(self) -> float:
        assert self._stop_started is not None
        return self._stop_started + self._settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS

    def _kill_overdue(self) -> None:
        if self._stop_started is None or self._killed or time.monotonic() < self._kill_time():
            return
        self._killed = True
        for slot, cell in self._cells.items():
            logger.error("cell did not stop in time; killing it", cell=slot, cell_pid=cell.process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(cell.process.pid, signal.SIGKILL)

    def _exit_code(self) -> int:
        if self._fatal is not None:
            code = self._fatal
        else:
            failed = [c if c > 0 else 128 - c for c in self._final_codes if c != 0]
            code = max(failed, default=0)
        (logger.info if code == 0 else logger.error)("stopped", exit_code=code)
        return code
