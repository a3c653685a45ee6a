"""A gateway whose open-file limit is used up (idle client connections hold a descriptor each):
it must not spin or flood its log, must answer what it can with an OpenAI error, and must serve
again once connections close. The limit is lowered with prlimit(1): the gateway raises its soft
limit to the hard one at start, so both are set."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest

from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess

pytestmark = pytest.mark.skipif(not shutil.which("prlimit") or not os.path.exists("/proc/self/fd"),
                                reason="needs prlimit(1) and /proc")

OPEN_FILES = 96  # the gateway's own descriptors (listeners, log files, gRPC) take ~20 of them


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@contextmanager
def _limited_gateway(tmp_path, **kwargs) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path, prefix=["prlimit", f"--nofile={OPEN_FILES}:{OPEN_FILES}"], **kwargs) as gateway:
        yield gateway


@contextmanager
def _descriptors_used_up(gateway: GatewayProcess) -> Iterator[None]:
    """Idle connections until the gateway has no descriptor left, and more waiting to be accepted."""
    idle = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(OPEN_FILES + 20)]
    try:
        _wait(lambda: _open_files(gateway.proc.pid) >= OPEN_FILES)
        yield
    finally:
        for connection in idle:
            connection.close()


def test_out_of_descriptors_the_standard_loop_neither_spins_nor_floods_the_log_and_recovers(tmp_path):
    """Was (EVENT_LOOP=asyncio): asyncio retried the accept up to the backlog's 128 times per try,
    each failure an ERROR line with its traceback and one more scheduled retry: ~1,000 lines and a
    quarter of a core a second for as long as the descriptors stayed used up."""
    with _limited_gateway(tmp_path, env={"EVENT_LOOP": "asyncio"}) as gateway:
        with _descriptors_used_up(gateway):
            log_before = gateway.stderr_path.read_bytes().count(b"\n")
            cpu_before = _cpu_seconds(gateway.proc.pid)
            time.sleep(2)  # a span of exhaustion is what is measured
            cpu = _cpu_seconds(gateway.proc.pid) - cpu_before
            new_lines = gateway.stderr_path.read_bytes().splitlines()[log_before:]
        assert cpu < 0.2, f"{cpu:.2f} s of CPU in 2 s with no descriptor left"
        assert len(new_lines) <= 1, new_lines[:3]
        warnings = [orjson.loads(line) for line in gateway.stderr_path.read_bytes().splitlines()
                    if b"cannot accept connections" in line]
        assert len(warnings) == 1 and warnings[0]["level"] == "WARNING"
        assert b'"level":"ERROR"' not in gateway.stderr_path.read_bytes()
        # the connections that waited meanwhile are served now
        assert httpx.get(f"{gateway.root_url}/health", timeout=5).status_code == 200


def _post(connection: socket.socket, model: str, stream: bool = False, request_id: str = "fds") -> tuple[int, dict]:
    """A chat request on a connection opened before the descriptors ran out; its status and JSON body."""
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    connection.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
                       f"X-Request-ID: {request_id}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    reader = connection.makefile("rb")
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        length = int(value) if name.lower() == "content-length" else length
    return status, orjson.loads(reader.read(length))


@pytest.mark.parametrize("model", ["gpt-test", "gemini-test"], ids=["new-upstream-connection", "first-use-of-a-provider"])
def test_a_call_that_needs_a_descriptor_none_left_is_a_503_naming_the_gateway(upstream, fake, tmp_path, model):
    """Was: a 502 `upstream_unreachable` blaming the upstream ('too many open files') when the
    upstream connection could not be opened, and a 500 with a traceback in the app log when the
    call was a provider's first (its module could not be imported)."""
    with _limited_gateway(tmp_path, upstream_url=upstream.base_url, gemini_url=f"{upstream.base_url}beta") as gateway:
        connection = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        with connection:
            # the hop is connected and the OpenAI-compatible providers' module loaded: only the call's own needs remain
            assert _post(connection, "local-test")[0] == 200
            with _descriptors_used_up(gateway):
                for stream in (False, True):
                    status, body = _post(connection, model, stream, request_id=f"fds-{stream}")
                    assert (status, body["error"]["code"]) == (503, "gateway_out_of_file_descriptors"), body
        for stream in (False, True):  # recorded as the gateway's 503 (the record follows the answer)
            assert gateway.wait_for_record(f"fds-{stream}")["status_code"] == 503
        assert b"Traceback" not in gateway.stderr_path.read_bytes()
