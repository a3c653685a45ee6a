"""Peer gateways for `make bench-peers`: LiteLLM's proxy in its own venv (.bench/litellm-venv),
kept offline (LITELLM_LOCAL_MODEL_COST_MAP=True) and pointed at the benchmark's fake upstreams."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from aiproxy.testing.gateway import free_port


class PeerUnavailable(RuntimeError):
    pass


def _install_litellm(venv: Path, log: Path) -> Path:
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"bench: installing litellm[proxy] into {venv} (log: {log}) ...", file=sys.stderr, flush=True)
    with log.open("ab") as out:
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"]]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise PeerUnavailable(f"`{' '.join(step)}` failed: " + " | ".join(tail))
    if not exe.exists():
        raise PeerUnavailable(f"the litellm install left no {exe}")
    return exe


class LiteLLMProxy:
    """`litellm --config` with one model per fake upstream: model_name -> openai/upstream-model."""

    def __init__(self, bench_dir: Path, upstreams: dict[str, str]) -> None:
        self.dir = bench_dir
        self.upstreams = upstreams  # model_name -> fake upstream base URL (…/v1)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        # LiteLLM refuses to start without a strong master key; clients send it as their Bearer token.
        self.master_key = f"sk-bench-{secrets.token_hex(32)}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LiteLLMProxy:
        exe = _install_litellm(self.dir / "litellm-venv", self.dir / "litellm-install.log")
        config = self.dir / "litellm-config.yaml"
        config.write_text(yaml.safe_dump({
            "model_list": [
                {"model_name": name, "litellm_params": {"model": "openai/upstream-model", "api_base": url,
                                                        "api_key": "sk-fake-upstream"}}
                for name, url in self.upstreams.items()
            ],
            "litellm_settings": {"telemetry": False},
        }))
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
               "LITELLM_MASTER_KEY": self.master_key,
               "NO_PROXY": "*", "no_proxy": "*"}
        self.log = (self.dir / "litellm.log").open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.dir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerUnavailable(f"litellm exited with {self.proc.returncode}; see {self.dir / 'litellm.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise PeerUnavailable(f"litellm did not answer within {timeout:.0f} s; see {self.dir / 'litellm.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
