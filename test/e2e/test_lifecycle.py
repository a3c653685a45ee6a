"""Cancellation, graceful shutdown, workers, timeouts, body limits, development keys and
key-hash stability: the gateway's behaviour over its whole life."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import orjson
import pytest

from aiproxy.testing.fake_openai import HangReply, StreamReply, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY, COMMAND, GatewayProcess, free_port, refused_start
from aiproxy.testing.streams import RestStream
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
CANCEL_BOUND = 0.1  # seconds from the client giving up to the upstream call being cancelled


def test_rest_disconnect_cancels_upstream(gateway, fake):
    fake.push(HangReply())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json=BODY, timeout=0.5)
    gave_up = time.monotonic()
    cancelled = fake.wait_cancelled()
    assert cancelled.cancelled_at - gave_up < CANCEL_BOUND


def test_rest_stream_disconnect_cancels_upstream(gateway, fake):
    fake.push(StreamReply(text_chunks(["first"], usage=False)[:2], done=False, hang_after=True))
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", headers=AUTH,
                      json={**BODY, "stream": True}, timeout=5) as response:
        for line in response.iter_lines():
            if "first" in line:
                break
    gave_up = time.monotonic()
    assert fake.wait_cancelled().cancelled_at - gave_up < CANCEL_BOUND


def test_grpc_cancel_cancels_upstream(gateway, fake):
    fake.push(HangReply())
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="hi")
        future = stub.CreateChatCompletion.future(request, metadata=(("authorization", f"Bearer {CLIENT_KEY}"),))
        deadline = time.monotonic() + 5
        while not fake.received and time.monotonic() < deadline:
            time.sleep(0.005)
        future.cancel()
        gave_up = time.monotonic()
    assert fake.wait_cancelled().cancelled_at - gave_up < CANCEL_BOUND


def test_cancelled_request_is_logged_as_499(gateway, fake):
    fake.push(HangReply())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.base_url}/chat/completions", headers={**AUTH, "X-Request-ID": "gave-up-1"},
                   json=BODY, timeout=0.3)
    assert gateway.wait_for_record("gave-up-1")["status_code"] == 499


@pytest.fixture(scope="module")
def strict_gateway(upstream, tmp_path_factory):
    """Short upstream and body timeouts, a tiny body limit and a provider on a closed port."""
    mappings = {"gpt-test": "openrouter:openai/gpt-4o", "dead": "openai:gpt-4o"}
    env = {"PROVIDERS__OPENROUTER__READ_TIMEOUT": "0.5", "MAX_BODY_BYTES": "4096", "REQUEST_BODY_TIMEOUT_SECONDS": "1",
           "PROVIDERS__OPENAI__BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "OPENAI_API_KEY": "sk-openai-x"}
    with GatewayProcess(tmp_path_factory.mktemp("strict"), upstream_url=upstream.base_url, mappings=mappings,
                        env=env) as gw:
        yield gw


def test_upstream_timeout_is_504(strict_gateway, fake):
    fake.push(HangReply())
    response = httpx.post(f"{strict_gateway.base_url}/chat/completions", headers=AUTH, json=BODY, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_unreachable_upstream_is_502(strict_gateway):
    response = httpx.post(f"{strict_gateway.base_url}/chat/completions", headers=AUTH,
                          json={**BODY, "model": "dead"}, timeout=10)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"


def test_body_over_limit_is_413_and_logged(strict_gateway):
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 10_000}]}
    response = httpx.post(f"{strict_gateway.base_url}/chat/completions", headers=AUTH, json=big)
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["error"]["message"]
    assert strict_gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 413


def _raw_response(gateway: GatewayProcess, head: bytes) -> tuple[int, dict[str, str], dict, float]:
    """Send raw bytes, read one HTTP response: status, headers, JSON body, seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock, sock.makefile("rb") as reader:
        sock.sendall(head)
        status = int(reader.readline().split()[1])
        headers = {}
        while line := reader.readline().rstrip(b"\r\n"):
            name, _, value = line.decode().partition(": ")
            headers[name.lower()] = value
        body = orjson.loads(reader.read(int(headers["content-length"])))
    return status, headers, body, time.monotonic() - started


def _post_head(content_length: int, *extra: str) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n"
            + "".join(f"{h}\r\n" for h in extra) + "\r\n").encode()


def test_stalled_body_is_408_and_closed(strict_gateway):
    status, headers, body, elapsed = _raw_response(strict_gateway, _post_head(100) + b'{"model"')
    assert status == 408 and body["error"]["code"] == "request_timeout", body
    assert "REQUEST_BODY_TIMEOUT_SECONDS" in body["error"]["message"]
    assert 0.9 < elapsed < 5 and headers["connection"] == "close"
    record = strict_gateway.wait_for_record(headers["x-request-id"])
    # Timed from the request's arrival, not from the refusal (which logged 0.02 ms, stamped 1 s late).
    assert record["status_code"] == 408 and 900 < record["latency_ms"] < elapsed * 1000
    assert datetime.fromisoformat(record["ts"]) < datetime.now(UTC) - timedelta(seconds=0.9)


def test_unfinished_request_head_and_silent_connection_are_closed(strict_gateway):
    """Was: a request head that never completes (slowloris, even one trickling a byte at a time) or
    a connection that sends nothing kept its connection for aiohttp's default 3630 s."""
    started = time.monotonic()
    trickle = socket.create_connection(("127.0.0.1", strict_gateway.port), timeout=5)
    silent = socket.create_connection(("127.0.0.1", strict_gateway.port), timeout=5)
    trickle.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    with trickle, silent:
        for i in range(20):  # more header lines, each well within the timeout of the one before
            try:
                trickle.sendall(f"X-Slow-{i}: y\r\n".encode())
            except OSError:  # closed by the gateway
                break
            time.sleep(0.2)
        for sock in (trickle, silent):
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
    assert time.monotonic() - started < 3.5  # REQUEST_BODY_TIMEOUT_SECONDS is 1 here


def _closed_by_peer(sock: socket.socket) -> bool:
    """Read (and drop: SETTINGS, GOAWAY) until the gateway closes the connection, or 5 s pass."""
    sock.settimeout(5)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_idle_grpc_connections_are_closed(strict_gateway):
    """Was: gRPC kept a connection without calls open forever (one without a finished HTTP/2 preface
    for 120 s), so clients that connect and never call held a descriptor each until the process ran
    out and refused every client, REST's too."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
    started = time.monotonic()
    with (socket.create_connection(("127.0.0.1", strict_gateway.grpc_port)) as idle,
          socket.create_connection(("127.0.0.1", strict_gateway.grpc_port)) as unfinished):
        idle.sendall(preface)
        unfinished.sendall(preface[:10])
        assert _closed_by_peer(idle) and _closed_by_peer(unfinished)
    assert time.monotonic() - started < 4  # REQUEST_BODY_TIMEOUT_SECONDS is 1 here
    with grpc.insecure_channel(strict_gateway.grpc_target) as channel:  # a channel reconnects after its idle close
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        for pause in (0, 1.5):
            time.sleep(pause)
            assert stub.ListModels(chat_pb2.ListModelsRequest(), timeout=5).data

def _server_settings(gateway: GatewayProcess) -> dict[int, int]:
    """The HTTP/2 SETTINGS the gRPC port announces to a new connection."""
    with socket.create_connection(("127.0.0.1", gateway.grpc_port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        reader = sock.makefile("rb")
        while True:
            head = reader.read(9)
            length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
            payload = reader.read(length)
            if kind == 4 and not flags & 1:  # SETTINGS, not an ACK
                return {int.from_bytes(payload[i:i + 2], "big"): int.from_bytes(payload[i + 2:i + 6], "big")
                        for i in range(0, length, 6)}


def test_a_grpc_connection_holds_a_bounded_number_of_calls(strict_gateway):
    """Was: no limit, and a call is held until its request message is complete, before its key is
    checked: one unauthenticated connection opening 60,000 calls that never finish held 380 MiB."""
    max_concurrent_streams = 0x3
    assert _server_settings(strict_gateway).get(max_concurrent_streams) == 1000

def _open_file_limits(pid: int) -> tuple[int, int]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="reads the gateway's limits from /proc")
def test_gateway_raises_its_open_file_limit(tmp_path):
    """Was: started with the usual soft limit of 1024 descriptors (systemd's, recent Docker's), the
    gateway dropped every client unanswered once about a thousand connections were open."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard limit leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        gateway = GatewayProcess(tmp_path).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        raised, _ = _open_file_limits(gateway.proc.pid)
    finally:
        gateway.stop()
    assert raised > 1024 and raised == min(hard, 1 << 20)

@pytest.mark.parametrize("expect", [(), ("Expect: 100-continue",)], ids=["plain", "expect-100"])
def test_declared_oversized_body_is_413_before_reading(strict_gateway, expect):
    """With `Expect: 100-continue` (curl sends it for bodies over 1 MB) the 413 comes instead of
    the 100, so the client never uploads what will be refused."""
    status, headers, body, elapsed = _raw_response(strict_gateway, _post_head(100_000_000, *expect))
    assert status == 413 and body["error"]["code"] == "request_too_large", body
    assert elapsed < 0.9  # not after the body timeout: nothing was waited for
    assert headers["connection"] == "close"


def test_sigterm_lets_streams_finish_and_exits_zero(upstream, fake, tmp_path):
    gateway = GatewayProcess(tmp_path, upstream_url=upstream.base_url).start()
    events = text_chunks([f" p{i}" for i in range(10)])
    payload = StreamReply(events).payload()
    # Cut the stream into pieces sent 150 ms apart, so SIGTERM lands in the middle of it.
    fake.push(StreamReply(events, splits=[payload.index(b"\n\n", i * 100) + 2 for i in range(1, 8)], delay=0.15))
    reader = RestStream(gateway)
    gateway.proc.send_signal(signal.SIGTERM)
    reader.join(20)
    assert gateway.proc.wait(20) == 0
    assert reader.lines[-1] == "data: [DONE]"
    assert any(" p9" in line for line in reader.lines), "the stream was cut before its last chunk"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.root_url}/health", timeout=1)


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def test_workers_share_the_ports(upstream, tmp_path):
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, workers=2) as gateway:
        cells = [pid for pid in child_pids(gateway.proc.pid)
                 if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(cells) == 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # every cell must be up before we count answers
            ok = [httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH,
                             json={**BODY, "model": "mock"}).status_code for _ in range(20)]
            if all(code == 200 for code in ok):
                break
        assert all(code == 200 for code in ok)
        with grpc.insecure_channel(gateway.grpc_target) as channel:
            models = chat_pb2_grpc.ChatServiceStub(channel).ListModels(chat_pb2.ListModelsRequest())
            assert models.data
    assert gateway.proc.returncode == 0


def test_key_hash_is_stable_across_restarts(upstream, tmp_path):
    hashes = []
    for attempt in range(2):
        with GatewayProcess(tmp_path, upstream_url=upstream.base_url) as gateway:
            rid = f"restart-{attempt}"
            httpx.post(f"{gateway.base_url}/chat/completions", headers={**AUTH, "X-Request-ID": rid},
                       json={**BODY, "model": "mock"})
            hashes.append(gateway.wait_for_record(rid)["api_key_hash"])
    assert hashes[0] == hashes[1] and CLIENT_KEY not in hashes[0]


def test_no_key_configured_generates_a_dev_key(tmp_path):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "GRPC_PORT": "0", "LOG_DIR": str(tmp_path / "logs"),
           "SETTINGS_FILE": str(GatewayProcess.__init__.__globals__["SETTINGS_FILE"])}
    config = tmp_path / "configs"
    config.mkdir()
    (config / "config.yml").write_text('model_mappings:\n  "mock": "mock:echo"\n')
    proc = subprocess.Popen(COMMAND,
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        key = next(line.split("=", 1)[1] for line in (tmp_path / ".env").read_text().splitlines()
                   if line.startswith("API_KEYS="))
        assert key.startswith("sk-aiproxy-")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"model": "mock", "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=15)[1].decode()
    assert key in stderr  # shown once to the operator on the terminal
    assert proc.returncode == 0


def test_bad_config_stops_startup_with_one_line(tmp_path):
    (tmp_path / "config.yml").write_text('model_mappings:\n  "a": "mock:x"\n  "a": "mock:y"\n')
    env = {"PATH": os.environ["PATH"], "API_KEYS": "k", "CONFIG_PATH": str(tmp_path / "config.yml"),
           "SETTINGS_FILE": str(GatewayProcess.__init__.__globals__["SETTINGS_FILE"]), "LOG_DIR": str(tmp_path)}
    result = subprocess.run(COMMAND,
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "duplicate model mapping key 'a'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("blocked", ["log_dir", "requests_dir"])
def test_unwritable_log_dir_stops_startup_with_one_line(tmp_path, workers, blocked):
    """configure_logging runs in the cell (and in the parent with --workers): its failure is the same
    one-line configuration error, exit 2, as any other, never a traceback or a restart loop."""
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    if blocked == "log_dir":
        log_dir = in_the_way / "logs"
    else:  # the parent can write LOG_DIR; only the cells, which also write request logs, cannot
        log_dir = tmp_path / "logs"
        log_dir.mkdir()
        (log_dir / "requests").write_text("")
    gateway = GatewayProcess(tmp_path, workers=workers, env={"LOG_DIR": str(log_dir), "KEY_HASH_SECRET": "k" * 32,
                                                           "LOGDB_DIR": str(tmp_path / "db")})
    for _ in range(3):
        result = refused_start(gateway, tmp_path, 30, f"an unwritable {blocked}")
        if "in use" not in result.stderr:
            break
        # free_port()'s ports are ephemeral ones, which another test's client may take meanwhile
        gateway.env.update(PORT=str(free_port()), GRPC_PORT=str(free_port()))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aiproxy: configuration error: ")]
    assert errors and all("LOG_DIR" in line for line in errors), result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_logdb_dir_with_live_ingest_stops_startup_with_one_line(tmp_path):
    """It started and served, its live ingest logging a failed round with a traceback on and on."""
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    gateway = GatewayProcess(tmp_path, env={"LOGDB_ENABLED": "true", "LOGDB_DIR": str(in_the_way / "db")})
    result = refused_start(gateway, tmp_path, 15, "a LOGDB_DIR it cannot write")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("aiproxy: configuration error: LOGDB_DIR=") and "Not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_level_never_changes_the_log_format(upstream, tmp_path):
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, env={"LOG_LEVEL": "ERROR"}) as gateway:
        response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={**BODY, "model": "mock"})
        assert gateway.wait_for_record(response.headers["x-request-id"])["status_code"] == 200
        httpx.post(f"{gateway.base_url}/chat/completions", content=b"{", headers=AUTH)
    app_lines = (tmp_path / "logs" / "app.log").read_bytes().splitlines()
    request_lines = [line for path in (tmp_path / "logs" / "requests").glob("*.jsonl")
                     for line in path.read_bytes().splitlines()]
    assert len(request_lines) == 2
    for line in app_lines + request_lines:
        assert isinstance(orjson.loads(line), dict)  # JSON lines, never ANSI or pretty-printed text


def test_library_logs_are_json_without_keys(upstream, tmp_path):
    """aiohttp's own parser errors quote the raw header line, key included; they must reach the app
    log as JSON (at DEBUG: a client's malformed request) and without the key."""
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, env={"LOG_LEVEL": "DEBUG"}) as gateway:
        raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
               + b"\x00\r\nContent-Length: 2\r\n\r\n{}")
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(raw)
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.")
    stderr = gateway.stderr_path.read_bytes()
    entries = [orjson.loads(line) for line in stderr.splitlines() if line.strip()]  # every line is JSON
    refused = [e for e in entries if e["msg"].startswith("Error handling request")]
    assert refused and refused[0]["level"] == "DEBUG" and refused[0]["logger"] == "aiohttp.server"
    assert f"X-Request-ID: {refused[0]['request_id']}\r\n".encode() in answer  # the id the client was given
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        assert CLIENT_KEY.encode() not in path.read_bytes(), f"the key leaked into {path}"


def test_enable_file_logging_false_keeps_app_log_off(upstream, tmp_path):
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, env={"ENABLE_FILE_LOGGING": "false"}) as gateway:
        response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={**BODY, "model": "mock"})
        gateway.wait_for_record(response.headers["x-request-id"])  # the request log still works
    assert not (tmp_path / "logs" / "app.log").exists()


def test_a_running_gateway_applies_the_log_retention_without_traffic(upstream, tmp_path):
    """Start-up and a day's rollover are not the only times: an idle gateway (no rollover for days)
    or a retention under a day (files expire between two rollovers) kept files past it."""
    keep = 3  # seconds: the gateway applies it every 1 s (a tenth of it, at least 1 s)
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url,
                        env={"REQUEST_LOG_RETENTION": f"{keep} seconds"}) as gateway:
        yesterday = datetime.now(UTC) - timedelta(days=1)
        expired = [gateway.log_dir / "requests" / f"requests-{yesterday:%Y%m%d}-99999.jsonl",
                   gateway.log_dir / f"app.{yesterday:%Y-%m-%d_%H-%M-%S_%f}.log"]
        for path in expired:
            path.write_text("{}\n")  # written now: expires `keep` seconds later, with the gateway idle
        deadline = time.monotonic() + keep + 5
        while any(path.exists() for path in expired) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(path.exists() for path in expired)


@pytest.mark.parametrize("taken", ["PORT", "GRPC_PORT"])
@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
def test_a_port_in_use_stops_startup_with_one_line_naming_the_setting(tmp_path, taken, reuse_port):
    """Also when the listener allows port sharing (a running aiproxy, a gRPC server): a second
    gateway must not quietly split the traffic with it."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        gateway = GatewayProcess(tmp_path, env={taken: str(holder.getsockname()[1])})
        result = subprocess.run(COMMAND, cwd=tmp_path, env=gateway.env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"set {taken}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.parametrize("spelling", ["::1", "[::1]"])
def test_an_ipv6_listen_address_serves_rest_and_grpc(tmp_path, spelling):
    """Was: GRPC_HOST=::1 (or ::) failed as "in use, not a local address" (gRPC's address was
    ::1:PORT, which it cannot parse), and HOST=[::1] ended start-up in a gaierror traceback."""
    gateway = GatewayProcess(tmp_path, env={"HOST": spelling, "GRPC_HOST": spelling})
    process = subprocess.Popen([*COMMAND, "serve"], cwd=tmp_path, env=gateway.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                if httpx.get(f"http://[::1]:{gateway.port}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)
        with grpc.insecure_channel(f"[::1]:{gateway.grpc_port}") as channel:
            models = chat_pb2_grpc.ChatServiceStub(channel).ListModels(chat_pb2.ListModelsRequest(), timeout=10)
            assert models.data
    finally:
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=15)[1].decode()
    assert process.returncode == 0, stderr
    listening = next(orjson.loads(line) for line in stderr.splitlines() if '"aiproxy listening"' in line)
    assert listening["rest"] == f"http://[::1]:{gateway.port}" and listening["grpc"] == f"[::1]:{gateway.grpc_port}"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_tmpdir_too_long_for_the_internal_socket_stops_startup_with_one_line(tmp_path, workers):
    """Was: grpc's "Failed to bind to address unix:…" traceback and exit 1 (with workers, five of
    them and a restart loop first): the cell's unix socket lives in TMPDIR, and a unix socket path
    has at most 107 bytes."""
    tmpdir = tmp_path / ("t" * 100)
    tmpdir.mkdir()
    gateway = GatewayProcess(tmp_path, workers=workers, env={"TMPDIR": str(tmpdir)})
    result = refused_start(gateway, tmp_path, 60, "a TMPDIR too long for its socket")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aiproxy: configuration error: ")]
    assert errors and all("set TMPDIR" in line and "107 bytes" in line for line in errors), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("grpc_host", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_rest_and_grpc_on_the_same_port_stop_startup_with_one_line(tmp_path, grpc_host):
    """Was: both listened (SO_REUSEPORT let the second bind succeed), REST took every connection and
    gRPC clients got "Failed parsing HTTP/2", with nothing in the log."""
    gateway = GatewayProcess(tmp_path)
    gateway.env.update(GRPC_PORT=gateway.env["PORT"], GRPC_HOST=grpc_host)
    result = refused_start(gateway, tmp_path, 15, "REST and gRPC on one port")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("aiproxy: configuration error: PORT and GRPC_PORT are both")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("setting", ["HOST", "GRPC_HOST"])
def test_a_listen_address_of_another_machine_names_the_host_setting(tmp_path, setting):
    """Was: "stop the server using it, or set GRPC_PORT" for a GRPC_HOST that is not an address of
    this machine (192.0.2.1 is TEST-NET-1): the advice named neither the cause nor GRPC_HOST."""
    gateway = GatewayProcess(tmp_path, env={setting: "192.0.2.1"})
    result = refused_start(gateway, tmp_path, 30, f"{setting} not of this machine")
    assert result.returncode == 2
    assert result.stderr.startswith("aiproxy: configuration error: cannot listen on 192.0.2.1:")
    assert result.stderr.rstrip().endswith(f"set {setting} to an address of this machine"), result.stderr


def test_no_log_files_need_no_writable_log_dir(tmp_path):
    """Was: with both log files off, start-up still stopped on LOG_DIR, to create the secret of the
    key hashes that only request log records carry."""
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    env = {"LOG_DIR": str(in_the_way / "logs"), "ENABLE_FILE_LOGGING": "false", "REQUEST_LOG_ENABLED": "false"}
    with GatewayProcess(tmp_path, env=env) as gateway:
        response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json={**BODY, "model": "mock"})
        assert response.status_code == 200
    assert gateway.proc.returncode == 0


def test_port_zero_logs_the_port_the_system_chose(tmp_path):
    """Was: "aiproxy listening" said rest=http://127.0.0.1:0, so nobody could tell where it listened
    (gRPC's line already gave its real port)."""
    gateway = GatewayProcess(tmp_path, env={"PORT": "0", "GRPC_PORT": "0"})
    process = subprocess.Popen([*COMMAND, "serve"], cwd=tmp_path, env=gateway.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        line = process.stderr.readline()
        while b'"aiproxy listening"' not in line:
            assert line, "the gateway exited before it listened"
            line = process.stderr.readline()
        rest = orjson.loads(line)["rest"]
        assert not rest.endswith(":0")
        assert httpx.get(f"{rest}/health", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert process.returncode == 0
