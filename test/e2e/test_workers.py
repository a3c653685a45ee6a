"""`--workers N`: the parent supervises its cells, and they never outlive it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import orjson
import pytest

from aiproxy.cell import internal_socket_path
from aiproxy.testing.fake_openai import StreamReply, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.streams import RestStream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def cells_of(parent: int) -> list[int]:
    cells = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in cmdline:
            cells.append(int(stat.parent.name))
    return sorted(cells)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def app_log(gateway: GatewayProcess) -> list[dict]:
    entries = []
    for line in gateway.stderr_path.read_bytes().splitlines():
        if line.startswith(b"{"):
            entries.append(orjson.loads(line))
    return entries


@pytest.fixture()
def workers_gateway(upstream, tmp_path):
    gateways = []

    def start(**env) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path / f"gw{len(gateways)}", upstream_url=upstream.base_url, workers=2,
                                 env={k: str(v) for k, v in env.items()}).start()
        gateways.append(gateway)
        wait_for(lambda: len(cells_of(gateway.proc.pid)) == 2, what="two cells")
        return gateway

    yield start
    for gateway in gateways:  # whatever a failed test left running
        for pid in cells_of(gateway.proc.pid) if gateway.proc.poll() is None else ():
            os.kill(pid, signal.SIGKILL)
        gateway.stop()


def test_cells_exit_when_the_parent_is_killed(workers_gateway):
    """Was: the cells lived on as orphans and kept the ports, so a restart failed 'Address already in use'."""
    gateway = workers_gateway()
    cells = cells_of(gateway.proc.pid)
    gateway.proc.kill()
    gateway.proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in cells), 10, "the orphaned cells to exit")
    for port in (gateway.port, gateway.grpc_port):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # nobody listens there any more


def test_a_dead_cell_is_logged_and_restarted(workers_gateway):
    gateway = workers_gateway()
    victim, survivor = cells_of(gateway.proc.pid)
    wait_for(lambda: os.path.exists(internal_socket_path(victim)), what="the cell's internal socket")
    os.kill(victim, signal.SIGKILL)
    cells = wait_for(lambda: (c := cells_of(gateway.proc.pid)) and len(c) == 2 and victim not in c and c,
                     what="a new cell")
    assert survivor in cells
    death = [e for e in app_log(gateway) if e.get("cell_pid") == victim and e["level"] == "ERROR"]
    assert death and death[0]["signal"] == "SIGKILL" and "restarting" in death[0]["msg"], death
    assert death[0]["pid"] == gateway.proc.pid  # the parent says so
    assert not os.path.exists(internal_socket_path(victim))  # the parent removed what the killed cell left
    wait_for(lambda: all(httpx.get(f"{gateway.root_url}/ready").status_code == 200 for _ in range(10)),
             what="every cell ready")
    assert gateway.stop() == 0


def test_a_cell_that_keeps_dying_at_startup_stops_the_gateway(workers_gateway):
    gateway = workers_gateway()
    deadline = time.monotonic() + 30
    while gateway.proc.poll() is None and time.monotonic() < deadline:
        for pid in cells_of(gateway.proc.pid):
            with contextlib.suppress(ProcessLookupError):  # gone since it was listed: the parent ended it
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    assert gateway.proc.wait(5) == 1
    assert any("times in a row" in e["msg"] for e in app_log(gateway))
    assert not cells_of(gateway.proc.pid)


def test_a_cell_stopped_cleanly_on_its_own_is_no_error_and_comes_back(workers_gateway):
    """Was: a cell that a signal of its own stopped cleanly (systemd signals every process, so often
    before the parent hears of the stop) was logged as an ERROR death and restarted at once."""
    gateway = workers_gateway()
    stopped, other = cells_of(gateway.proc.pid)
    os.kill(stopped, signal.SIGTERM)
    cells = wait_for(lambda: (c := cells_of(gateway.proc.pid)) and len(c) == 2 and stopped not in c and c,
                     what="a new cell")
    assert other in cells
    [note] = [e for e in app_log(gateway) if e.get("cell_pid") == stopped and e["level"] != "INFO"]
    assert note["level"] == "WARNING" and "restarting" in note["msg"] and note["exit_code"] == 0, note
    assert gateway.stop() == 0
    assert [e["msg"] for e in app_log(gateway) if e["level"] == "ERROR"] == []


def test_sighup_stops_the_workers_gracefully(workers_gateway, fake):
    """Was: SIGHUP killed the parent at once and orphaned the cells."""
    gateway = workers_gateway(SHUTDOWN_GRACE_SECONDS=10)
    fake.push(StreamReply(text_chunks([" a", " b", " c"]), per_event=True, delay=0.4))
    reader = RestStream(gateway)
    cells = cells_of(gateway.proc.pid)
    gateway.proc.send_signal(signal.SIGHUP)
    assert gateway.proc.wait(10) == 0
    reader.join(5)
    assert reader.lines[-1] == "data: [DONE]"
    assert not any(alive(pid) for pid in cells)


def test_a_cell_killed_during_the_shutdown_fails_the_exit_code(workers_gateway, fake):
    """Was: max(0, -9) == 0, as if all went well."""
    gateway = workers_gateway(SHUTDOWN_GRACE_SECONDS=20)
    fake.push(StreamReply(text_chunks([f" t{i}" for i in range(400)]), per_event=True, delay=0.05))
    RestStream(gateway)
    gateway.proc.send_signal(signal.SIGTERM)
    busy = wait_for(lambda: (c := cells_of(gateway.proc.pid)) and len(c) == 1 and c, what="the idle cell to stop")
    os.kill(busy[0], signal.SIGKILL)
    assert gateway.proc.wait(10) == 128 + signal.SIGKILL


def test_cells_signalled_with_the_parent_stop_cleanly(workers_gateway):
    """systemd's default KillMode=control-group signals every process of the service, so a cell
    often gets the stop signal itself, and finishes, before the parent passes it on. Was: a cell
    that had left its event loop died of the parent's SIGUSR1 (default action: terminate), so a
    clean stop logged "cell did not stop cleanly" and exited 138."""
    gateway = workers_gateway()
    cells = cells_of(gateway.proc.pid)
    for pid in cells:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: {e["pid"] for e in app_log(gateway) if e["msg"] == "stopped"} >= set(cells), 10,
             "the cells to finish serving")
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(10) == 0
    assert [e["msg"] for e in app_log(gateway) if e["level"] == "ERROR"] == []
