"""Graceful shutdown of one gateway process: every listener stops at once, everything in flight
shares one SHUTDOWN_GRACE_SECONDS deadline, a second signal stops at once, and what was already
sent before the signal is answered."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aiproxy.testing.fake_openai import EndlessStreamReply, StreamReply, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY, COMMAND, GatewayProcess
from aiproxy.testing.streams import RestStream, unread_stream
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
GRPC_AUTH = (("authorization", f"Bearer {CLIENT_KEY}"),)
SHUTTING_DOWN = "server_shutting_down"


def long_stream() -> StreamReply:
    """A stream that would take 40 s: only the shutdown can end it."""
    return StreamReply(text_chunks([f" t{i}" for i in range(800)]), per_event=True, delay=0.05)


@pytest.fixture()
def start(upstream, tmp_path):
    """start(grace) -> a running gateway; whatever a failed test leaves running is stopped."""
    started: list[GatewayProcess] = []

    def start_gateway(grace: float, workers: int = 1) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path, upstream_url=upstream.base_url, workers=workers,
                                 env={"SHUTDOWN_GRACE_SECONDS": str(grace)}).start()
        started.append(gateway)
        return gateway

    yield start_gateway
    for gateway in started:
        gateway.stop(timeout=5)


class GrpcStream(threading.Thread):
    def __init__(self, gateway: GatewayProcess, request_id: str = "grpc-stream") -> None:
        super().__init__(daemon=True)
        self.target = gateway.grpc_target
        self.metadata = (*GRPC_AUTH, ("x-request-id", request_id))
        self.chunks = 0
        self.error: grpc.RpcError | None = None
        self.first = threading.Event()
        self.start()
        assert self.first.wait(10), "the stream did not start"

    def run(self) -> None:
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="hi")
        with grpc.insecure_channel(self.target) as channel:
            try:
                for _ in chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(request, metadata=self.metadata):
                    self.chunks += 1
                    self.first.set()
            except grpc.RpcError as exc:
                self.error = exc
        self.first.set()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    sock.settimeout(10)
    with sock.makefile("rb") as reader:
        status = int(reader.readline().split()[1])
        headers = {}
        while line := reader.readline().rstrip(b"\r\n"):
            name, _, value = line.decode().partition(": ")
            headers[name.lower()] = value
        return status, headers, reader.read(int(headers.get("content-length", 0)))


def post_head(length: int, request_id: str) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            f"X-Request-ID: {request_id}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            ).encode()


def wait_until_refused(attempt, within: float = 2.0) -> Exception:
    """The error `attempt` raises once it is refused (the listeners close within a moment of the signal)."""
    deadline = time.monotonic() + within
    while True:
        try:
            attempt()
        except (OSError, grpc.RpcError) as exc:
            return exc
        assert time.monotonic() < deadline, "still accepted after the signal"
        time.sleep(0.05)


def wait_until_shutting_down(gateway: GatewayProcess, within: float = 10.0) -> None:
    """Until the gateway has taken the stop signal (it logs "shutting down"): a fixed sleep after
    the signal assumed it did so within a moment, which a busy machine does not promise."""
    deadline = time.monotonic() + within
    while True:
        data = gateway.stderr_path.read_bytes()
        lines = data[: data.rfind(b"\n") + 1].splitlines()  # the lines written in full so far
        if any(orjson.loads(line).get("msg") == "shutting down" for line in lines if line.startswith(b"{")):
            return
        assert time.monotonic() < deadline, "the gateway did not take the stop signal"
        time.sleep(0.01)


def test_rest_and_grpc_streams_share_one_deadline(start, fake):
    """Was: the REST stream cut at 2x the grace, the gRPC one at 3x, neither told why."""
    grace = 1.5
    gateway = start(grace)
    fake.push(long_stream(), long_stream())
    rest, rpc = RestStream(gateway, request_id="cut-rest"), GrpcStream(gateway, request_id="cut-grpc")
    signalled = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(grace + 10) == 0
    took = time.monotonic() - signalled
    assert grace - 0.1 < took < grace + 1.5, f"exited {took:.2f} s after SIGTERM with a grace of {grace} s"
    rest.join(5)
    rpc.join(5)
    assert rest.lines[-1] == "data: [DONE]", rest.error
    assert orjson.loads(rest.lines[-2].removeprefix("data: "))["error"]["code"] == SHUTTING_DOWN
    assert rpc.chunks > 1 and rpc.error is not None
    assert rpc.error.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in rpc.error.details()
    for request_id in ("cut-rest", "cut-grpc"):  # the gateway ended them: not a 499 "client cancelled"
        record = gateway.wait_for_record(request_id)
        assert (record["status_code"], record["error"]["code"]) == (503, SHUTTING_DOWN), request_id


def test_a_stream_whose_client_stopped_reading_ends_quietly_at_the_deadline(upstream, fake, tmp_path):
    """Was: its last message was still queued on the cell's gRPC hop, so the status saying the
    gateway was shutting down could not follow it, and grpc.aio logged an ERROR with a traceback
    for every such client at every shutdown."""
    env = {"SHUTDOWN_GRACE_SECONDS": "1", "MAX_BODY_BYTES": str(512 * 1024 * 1024)}  # no answer limit in the way
    gateway = GatewayProcess(tmp_path, upstream_url=upstream.base_url, env=env).start()
    fake.push(EndlessStreamReply())
    with unread_stream(gateway, "stalled"):
        time.sleep(1.5)  # never read: every buffer on the way fills up, the upstream is throttled
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(10) == 0
    gateway.stop()
    app_log = [orjson.loads(line) for line in gateway.stderr_path.read_bytes().splitlines() if line.startswith(b"{")]
    assert [entry["msg"] for entry in app_log if entry["level"] == "ERROR"] == []
    record = gateway.wait_for_record("stalled")
    assert (record["status_code"], record["error"]["code"]) == (503, SHUTTING_DOWN)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_every_listener_stops_at_once_but_what_is_in_flight_finishes(start, fake, stop):
    """REST and gRPC refuse new connections and calls at once and health turns NOT_SERVING, while
    a stream, and a request whose body was still arriving (it has not reached the ChatService
    yet: it goes through the facade's internal channel after the signal), are served.
    SIGHUP is a graceful stop too (it used to kill the process at once)."""
    gateway = start(10)
    statuses: list[int] = []
    watching = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(gateway.grpc_target) as channel:
            try:
                for answer in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="")):
                    statuses.append(answer.status)
                    watching.set()
            except grpc.RpcError:
                pass

    threading.Thread(target=watch, daemon=True).start()
    assert watching.wait(10)
    fake.push(StreamReply(text_chunks([" a", " b", " c"]), per_event=True, delay=0.4))
    stream = RestStream(gateway)
    body = orjson.dumps({**BODY, "model": "mock"})
    slow = socket.create_connection(("127.0.0.1", gateway.port))
    slow.sendall(post_head(len(body), "slow-body") + body[:10])
    fresh = socket.create_connection(("127.0.0.1", gateway.port))  # connected, nothing sent yet
    early = grpc.insecure_channel(gateway.grpc_target)
    grpc.channel_ready_future(early).result(timeout=5)
    time.sleep(0.2)
    signalled = time.monotonic()
    gateway.proc.send_signal(stop)
    wait_until_shutting_down(gateway)

    fresh.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = read_response(fresh)
    assert status == 503 and headers["connection"] == "close"
    slow.sendall(body[10:])
    status, headers, answer = read_response(slow)
    assert status == 200 and headers["connection"] == "close", answer
    assert orjson.loads(answer)["choices"][0]["message"]["content"] == "hi"
    wait_until_refused(lambda: socket.create_connection(("127.0.0.1", gateway.port), timeout=2).close())
    request = chat_pb2.ChatCompletionRequest(model="mock")
    request.messages.add(role="user", content_text="during the drain")
    for channel in (early, grpc.insecure_channel(gateway.grpc_target)):
        with channel:
            call = partial(chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion, request, metadata=GRPC_AUTH,
                           timeout=3)
            assert wait_until_refused(call).code() == grpc.StatusCode.UNAVAILABLE

    assert gateway.proc.wait(15) == 0
    assert time.monotonic() - signalled < 5  # done when the work was done, not at the 10 s deadline
    stream.join(5)
    assert stream.lines[-1] == "data: [DONE]" and any(" c" in line for line in stream.lines)
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    assert {"rest-stream", "slow-body"} <= {r["request_id"] for r in gateway.request_records()}
    slow.close()
    fresh.close()


def test_a_second_signal_stops_at_once(start, fake):
    gateway = start(30)
    fake.push(long_stream())
    stream = RestStream(gateway)
    gateway.proc.send_signal(signal.SIGTERM)
    wait_until_shutting_down(gateway)  # taken as the first signal, not folded into the second
    streamed = len(stream.lines)
    deadline = time.monotonic() + 10
    while len(stream.lines) < streamed + 3:  # the stream goes on after the first signal
        assert gateway.proc.poll() is None and time.monotonic() < deadline, "the first signal must let the stream go on"
        time.sleep(0.02)
    assert gateway.proc.poll() is None, "the first signal must let the stream go on"
    again = time.monotonic()
    gateway.proc.send_signal(signal.SIGINT)
    assert gateway.proc.wait(10) == 0
    assert time.monotonic() - again < 2
    stream.join(5)
    assert stream.lines[-1] == "data: [DONE]"
    assert orjson.loads(stream.lines[-2].removeprefix("data: "))["error"]["code"] == SHUTTING_DOWN


@pytest.mark.parametrize("workers", [1, 2])
def test_one_signal_relayed_by_a_parent_is_still_a_graceful_stop(start, fake, workers):
    """`make run` stopped by a SIGTERM to its process group (systemd's default, `timeout`, `kill -- -PGID`):
    make relays SIGTERM to its child, which gets it twice at once and took the copy for a second signal,
    cutting every request in flight instead of draining them."""
    gateway = start(30, workers)
    fake.push(long_stream())
    stream = RestStream(gateway)
    gateway.proc.send_signal(signal.SIGTERM)
    time.sleep(0.02)  # not at once: the kernel would merge two pending signals into one
    gateway.proc.send_signal(signal.SIGTERM)  # the parent's copy, a moment later
    wait_until_shutting_down(gateway)
    streamed = len(stream.lines)
    deadline = time.monotonic() + 10
    while len(stream.lines) < streamed + 3:  # the stream goes on: a drain, not a stop at once
        assert gateway.proc.poll() is None and time.monotonic() < deadline, "the relayed copy stopped it at once"
        time.sleep(0.02)
    time.sleep(0.5)
    gateway.proc.send_signal(signal.SIGTERM)  # a real second signal still stops it at once
    assert gateway.proc.wait(10) == 0


@pytest.fixture()
def slow_upstream(fake):
    fake.latency = 0.3
    yield fake
    fake.latency = 0.0


def test_requests_sent_just_before_the_signal_are_answered(start, slow_upstream):
    """Was: most requests still in the accept queue or unread when SIGTERM came were reset with no
    answer and no record. An idle keep-alive connection does not hold the drain either."""
    gateway = start(20)
    with httpx.Client() as keep_alive:  # one request served, then its connection idles
        assert keep_alive.get(f"{gateway.root_url}/health").status_code == 200
        body = orjson.dumps(BODY)
        clients = []
        for i in range(20):
            sock = socket.create_connection(("127.0.0.1", gateway.port))
            sock.sendall(post_head(len(body), f"race-{i}") + body)
            clients.append(sock)
        signalled = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        answers = []
        for sock in clients:
            try:
                status, headers, _ = read_response(sock)
                answers.append((status, headers.get("connection")))
            except (OSError, IndexError) as exc:
                answers.append((type(exc).__name__, None))
            sock.close()
        assert answers == [(200, "close")] * 20
        assert gateway.proc.wait(15) == 0
        assert time.monotonic() - signalled < 5  # the idle connection was closed, not waited for until 20 s
    records = {r["request_id"]: r["status_code"] for r in gateway.request_records()}
    assert all(records.get(f"race-{i}") == 200 for i in range(20))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_hang_up_with_the_terminal_gone_still_exits_zero(tmp_path, workers):
    """Was: exit code 120 (and 'cell did not stop cleanly' for every cell): stderr, a closed
    terminal, could not be flushed at exit. Here stderr is a pipe whose reader has gone."""
    gateway = GatewayProcess(tmp_path, workers=workers)
    reader, writer = os.pipe()
    process = subprocess.Popen([*COMMAND, "serve"], cwd=gateway.workdir, env=gateway.env, stdout=writer, stderr=writer)
    os.close(writer)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{gateway.root_url}/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        os.close(reader)  # the terminal is gone
        httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={**BODY, "model": "mock"}, timeout=10)
        process.send_signal(signal.SIGHUP)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_signal_during_start_up_is_a_graceful_stop(tmp_path, workers):
    """Was: a SIGTERM in the first ~0.9 s (while the gateway imported and built itself) killed it
    (exit -15). Start-up now holds the stop signals until the handlers exist."""
    gateway = GatewayProcess(tmp_path, workers=workers)
    process = subprocess.Popen([*COMMAND, "serve"], cwd=gateway.workdir, env=gateway.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Sent as soon as start-up holds SIGTERM (a fixed sleep flaked on a busy machine, where the
    # interpreter's own start took longer). Held, not merely caught: handlers exist only once
    # the gateway is nearly up, which is what this test is not about.
    try:
        deadline = time.monotonic() + 30
        while not any(state := _sigterm_state(process.pid)):
            assert process.poll() is None and time.monotonic() < deadline, "start-up never held SIGTERM"
            time.sleep(0.002)
        assert state == (True, False), "SIGTERM was not held during start-up"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:  # a failed check must not leave a gateway behind (its cells die with it)
            process.kill()
            process.wait()


def _sigterm_state(pid: int) -> tuple[bool, bool]:
    """Whether SIGTERM is blocked and whether it is caught, per /proc/PID/status."""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGTERM - 1)
    return bool(int(status["SigBlk"], 16) & bit), bool(int(status["SigCgt"], 16) & bit)


def test_a_second_signal_after_the_drain_still_exits_zero(tmp_path):
    """A second signal (a double Ctrl-C) that came after the drain had ended, while the process
    was exiting, met the default handlers again: exit code 143 (SIGTERM) or 130 (SIGINT)."""
    gateway = GatewayProcess(tmp_path).start()
    gateway.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while b'"msg":"stopped"' not in gateway.stderr_path.read_bytes():
        assert time.monotonic() < deadline, "the gateway did not stop"
        time.sleep(0.002)
    gateway.proc.send_signal(signal.SIGINT)
    assert gateway.proc.wait(10) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_gateway_started_with_nohup_survives_a_hang_up(tmp_path, workers):
    """Was: `nohup aiproxy serve &`, then closing the terminal, stopped the gateway: it handled the
    SIGHUP that nohup had set to be ignored."""
    gateway = GatewayProcess(tmp_path, workers=workers, prefix=("nohup",)).start()
    gateway.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert gateway.proc.poll() is None, "the hang-up stopped the gateway"
    assert httpx.get(f"{gateway.root_url}/ready", timeout=5).status_code == 200
    assert gateway.stop() == 0


def test_a_body_still_arriving_at_the_deadline_is_answered_503_and_logged(start):
    """Was: its connection was closed with no answer and no request log record, unlike every
    other request still running at the deadline."""
    gateway = start(1)
    body = orjson.dumps({**BODY, "model": "mock"})
    with socket.create_connection(("127.0.0.1", gateway.port)) as slow:
        slow.sendall(post_head(len(body), "unfinished-body") + body[:10])  # the rest never comes
        time.sleep(0.3)
        gateway.proc.send_signal(signal.SIGTERM)
        status, headers, answer = read_response(slow)
    assert status == 503 and headers["connection"] == "close"
    assert orjson.loads(answer)["error"]["code"] == SHUTTING_DOWN
    assert gateway.proc.wait(10) == 0
    record = gateway.wait_for_record("unfinished-body")
    assert (record["status_code"], record["error"]["code"]) == (503, SHUTTING_DOWN)
