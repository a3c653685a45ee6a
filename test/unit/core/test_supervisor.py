"""aiproxy.entrypoints.workers.Supervisor's bookkeeping of cells that have exited."""

from __future__ import annotations

import time

from aiproxy.config import Settings
from aiproxy.entrypoints.workers import Supervisor, _Cell


class _ExitedProcess:
    """What the supervisor reads of a multiprocessing.Process that has exited; like one, it
    refuses to be read once closed."""

    def __init__(self, pid: int, exitcode: int) -> None:
        self.pid = pid
        self._exitcode = exitcode
        self.closed = False

    @property
    def exitcode(self) -> int:
        if self.closed:
            raise ValueError("process object is closed")
        return self._exitcode

    def close(self) -> None:
        self.closed = True


def test_cells_that_all_stopped_on_a_configuration_error_stop_the_gateway_with_2():
    # Every cell of `--workers 2` meets the same bad LOG_DIR at once. The first one's death began
    # the stop, which reaped and closed the second; the loop then read the closed one:
    # "ValueError: process object is closed", a traceback and exit code 1.
    supervisor = Supervisor(Settings(workers=2), target=None)
    cells = {slot: _Cell(_ExitedProcess(2**22 + slot, 2), time.monotonic()) for slot in range(2)}
    supervisor._cells = dict(cells)
    supervisor._reap()
    assert supervisor._cells == {} and all(cell.process.closed for cell in cells.values())
    assert supervisor._exit_code() == 2
