"""Run the real `aiproxy serve` process on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
SETTINGS_FILE = REPO_ROOT / "configs" / "settings.toml"
CLIENT_KEY = "sk-test-client-4f9a1c"
ADMIN_KEY = "sk-test-admin-77d2e0"
UPSTREAM_KEYS = {"OPENROUTER_API_KEY": "sk-or-v1-upstream-secret-9b1d", "LOCAL_API_KEY": "sk-local-secret-5e2c",
                 "GEMINI_API_KEY": "AIza-gemini-secret-31f0"}
DEFAULT_MAPPINGS = {
    "gpt-test": "openrouter:openai/gpt-4o",
    "local-test": "local:llama3",
    "mock": "mock:echo",
    "mock-tools": "mock:tools",
    "gemini-test": "gemini:gemini-2.5-flash",
    "nokey-test": "openai:gpt-4o",
    "pattern-*": "openrouter:openai/pattern",
}


# `aiproxy` from this interpreter, whether or not the package's console script is installed.
COMMAND = (sys.executable, "-c", "from aiproxy.entrypoints.aiproxy import main; raise SystemExit(main())")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_start(gateway: GatewayProcess, cwd: Path, timeout: float, refused: str) -> subprocess.CompletedProcess:
    """`aiproxy serve` in the gateway's environment, which must stop at start-up: its result. A gateway
    that serves instead fails the test (`refused`: what it should not have started with)."""
    import pytest

    try:
        return subprocess.run([*COMMAND, "serve"], cwd=cwd, env=gateway.env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway started with {refused}")


class _PortTaken(RuntimeError):
    """The gateway could not listen on a port that free_port() had chosen for it."""


class GatewayProcess:
    """`with GatewayProcess(tmp_path, upstream_url=...) as gw:` starts, waits for /health, stops."""

    def __init__(
        self,
        workdir: Path,
        *,
        upstream_url: str | None = None,
        gemini_url: str | None = None,
        mappings: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
        prefix: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.prefix = list(prefix)  # argv run before the gateway's (testing.readonly.command)
        self.port = free_port()
        self.grpc_port = free_port()
        self.log_dir = self.workdir / "logs"
        self.proc: subprocess.Popen | None = None
        config = self.workdir / "config.yml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump({"model_mappings": mappings or DEFAULT_MAPPINGS}))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "SETTINGS_FILE": str(SETTINGS_FILE),
            "CONFIG_PATH": str(config),
            "LOG_DIR": str(self.log_dir),
            "LOGDB_DIR": str(self.log_dir / "db"),
            "PORT": str(self.port),
            "GRPC_PORT": str(self.grpc_port),
            "WORKERS": str(workers),
            "API_KEYS": CLIENT_KEY,
            "ADMIN_API_KEYS": ADMIN_KEY,
            "SHUTDOWN_GRACE_SECONDS": "5",
            **UPSTREAM_KEYS,
        }
        if upstream_url:
            # The fake upstream serves both /v1 (OpenAI) and /api/v1 (OpenRouter) paths.
            root = upstream_url.rsplit("/v1", 1)[0]
            self.env["PROVIDERS__OPENROUTER__BASE_URL"] = f"{root}/api/v1"
            self.env["PROVIDERS__LOCAL__BASE_URL"] = f"{root}/v1"
        if gemini_url:
            self.env["PROVIDERS__GEMINI__BASE_URL"] = gemini_url
        self.env.update(env or {})

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0, *, port_retries: int = 3) -> GatewayProcess:
        """free_port() only names a port that was free a moment ago: another socket (a test's own
        outgoing connection has an ephemeral port too) can take it before the gateway binds it.
        A start that fails on that alone is retried on new ports, when this object chose them."""
        for _ in range(port_retries):
            try:
                return self._start(timeout)
            except _PortTaken:
                self.port, self.grpc_port = free_port(), free_port()
                self.env.update(PORT=str(self.port), GRPC_PORT=str(self.grpc_port))
        return self._start(timeout)

    def _start(self, timeout: float) -> GatewayProcess:
        self.stderr_path = self.workdir / "gateway.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [*self.prefix, *COMMAND, "serve"],
            cwd=self.workdir,
            env=self.env,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        scheme = "https" if self.env.get("TLS_CERT_FILE") else "http"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._stderr.close()
                stderr = self.stderr_path.read_text()
                chosen = (self.env["PORT"], self.env["GRPC_PORT"]) == (str(self.port), str(self.grpc_port))
                if self.proc.returncode == 2 and "cannot listen on 127.0.0.1:" in stderr and chosen:
                    raise _PortTaken(stderr)
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{stderr}")
            try:
                if httpx.get(f"{scheme}://127.0.0.1:{self.port}/health", timeout=0.5, verify=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not become healthy:\n{self.stderr_path.read_text()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._stderr.close()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def request_records(self) -> list[dict]:
        import orjson

        records = []
        for path in sorted((self.log_dir / "requests").glob("*.jsonl")):
            data = path.read_bytes()
            # The writer thread may be mid-line: only lines it has finished are records.
            complete = data[: data.rfind(b"\n") + 1]
            records += [orjson.loads(line) for line in complete.splitlines() if line.strip()]
        return records

    def wait_for_record(self, request_id: str, timeout: float = 5.0) -> dict:
        return self.wait_for_records(request_id, 1, timeout)[0]

    def wait_for_records(self, request_id: str, count: int, timeout: float = 5.0) -> list[dict]:
        """The first `count` records with this id (a client's retries send the id it set each time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = [record for record in self.request_records() if record["request_id"] == request_id]
            if len(records) >= count:
                return records[:count]
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} request log records for {request_id}")
