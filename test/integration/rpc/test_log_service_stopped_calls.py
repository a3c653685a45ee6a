"""LogService calls that end while their SQLite statement runs (the client cancels, the deadline
passes), on a real gateway: the statement stops (the gateway's CPU goes idle at once), so the worker
thread is free for the next call.

Every LogService call runs in asyncio's default executor, min(32, cores + 4) threads. Before, a
cancelled call's statement ran on to its end: a search over a large index (seconds) cancelled that
many times took every thread, and any other call waited for them all."""

from __future__ import annotations

import math
import os
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from aiproxy.logstore import partitions
from aiproxy.testing.bundles import filled_store
from aiproxy.testing.gateway import ADMIN_KEY, GatewayProcess
from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

METADATA = (("authorization", f"Bearer {ADMIN_KEY}"),)
EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)  # the gateway's default executor
FRAGMENTS = 600_000  # QUERY matches them all: ~2.5 s alone, nearly all of it in SQLite
QUERY = "sailing OR wide OR sea"
IDLE_WITHIN_S = 2.0  # measured: 0.1-0.3 s on two busy cores; before, 15-40 s (every thread searching on)


def add_fragments(path: Path, count: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO request_text_index (request_id, role, content, endpoint, model_original, model_mapped)"
            " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " SELECT 'filler-' || i, 'user', 'sailing the wide sea' || substr(?, 1, 2 * (i % 40)), 'chat', 'm', 'm' FROM n",
            (count, " x" * 40))  # lengths vary, and so do scores: the best few are found, not every fragment tied


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("large-index")
    base = workdir / "logs" / "db"
    filled_store(base, days=1)
    path = partitions.discover(base)[0].path
    add_fragments(path, FRAGMENTS)
    with sqlite3.connect(path) as conn:
        request_id = conn.execute("SELECT request_id FROM requests LIMIT 1").fetchone()[0]
    with GatewayProcess(workdir, env={"LOGDB_ENABLED": "false"}) as gateway:
        yield gateway, request_id


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def idle_after(pid: int) -> float:
    """Seconds until the process stops using CPU (under 10 ms of it in 100 ms)."""
    started = time.monotonic()
    used = cpu_seconds(pid)
    while time.monotonic() < started + 120:
        time.sleep(0.1)
        used, before = cpu_seconds(pid), used
        if used - before < 0.01:
            return time.monotonic() - started
    return math.inf


def searching(gateway: GatewayProcess, stub, timeout: float | None) -> list[grpc.Future]:
    """EXECUTOR_THREADS slow searches, once the gateway is busy with them (its CPU time grows) or they ended."""
    before = cpu_seconds(gateway.proc.pid)
    calls = [stub.SearchRequests.future(logs_pb2.SearchRequestsRequest(q=QUERY), metadata=METADATA,
                                        timeout=timeout) for _ in range(EXECUTOR_THREADS)]
    deadline = time.monotonic() + 30
    while cpu_seconds(gateway.proc.pid) < before + 0.5 and not all(c.done() for c in calls) and time.monotonic() < deadline:
        time.sleep(0.02)
    return calls


@pytest.mark.parametrize("end", ["deadline", "cancel"])
def test_ended_searches_stop_and_the_next_call_is_answered_at_once(served, end):
    gateway, request_id = served
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        calls = searching(gateway, stub, 0.5 if end == "deadline" else None)
        for call in calls:
            if end == "cancel":
                call.cancel()
            with pytest.raises((grpc.RpcError, grpc.FutureCancelledError)) as ended:
                call.result()
            if end == "deadline":
                assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        idle = idle_after(gateway.proc.pid)
        record = stub.GetRequest(logs_pb2.GetRequestRequest(request_id=request_id), metadata=METADATA, timeout=10)
    print(f"{end}: the gateway was idle {idle:.2f} s after its calls ended")
    assert idle < IDLE_WITHIN_S  # the searches stopped: no thread works on for no one
    assert record.summary.request_id == request_id
