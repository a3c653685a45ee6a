"""Moving logs between two real gateways (issue 5): both receive multi-turn conversations
through the openai SDK; server A's logs reach server B as a bundle, over gRPC and through a
local file, while A keeps serving; B's search then finds the requests of both servers, with
A's dialogs intact."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from aiproxy.testing.gateway import ADMIN_KEY, CLIENT_KEY, GatewayProcess

openai = pytest.importorskip("openai")

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    with (
        GatewayProcess(tmp_path_factory.mktemp("a"), env={"LOGDB_ENABLED": "true", "LOGDB_SERVER_ID": "srv-a"}) as a,
        GatewayProcess(tmp_path_factory.mktemp("b"), env={"LOGDB_ENABLED": "true", "LOGDB_SERVER_ID": "srv-b"}) as b,
    ):
        yield a, b


def chat(gateway: GatewayProcess, topic: str, conversations: int = 2, turns: int = 3) -> None:
    """Multi-turn conversations: each request resends the history plus a new question."""
    with openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20) as client:
        for c in range(conversations):
            messages = []
            for turn in range(turns):
                messages.append({"role": "user", "content": f"{topic} conversation {c} question {turn}"})
                reply = client.chat.completions.create(model="mock", messages=messages)
                messages.append({"role": "assistant", "content": reply.choices[0].message.content})


def search(gateway: GatewayProcess, query: str) -> list[dict]:
    response = httpx.get(f"{gateway.root_url}/v1/logs/requests", params={"q": query, "limit": 100}, headers=ADMIN)
    response.raise_for_status()
    return response.json()["results"]


def wait_for(gateway: GatewayProcess, query: str, count: int, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = search(gateway, query)
        if len(hits) >= count and all(h["dialog_id"] for h in hits):
            return hits
        time.sleep(0.2)
    raise AssertionError(f"{gateway.root_url}: {query!r} found {len(search(gateway, query))} of {count}")


def dialog_turns(gateway: GatewayProcess, dialog_id: str) -> list[str]:
    response = httpx.get(f"{gateway.root_url}/v1/logs/dialogs/{dialog_id}", headers=ADMIN)
    response.raise_for_status()
    return [turn["summary"]["request_id"] for turn in response.json()["turns"]]


class Traffic:
    """Keeps a gateway busy from another thread; counts answers and failures."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway, self.stop, self.ok, self.failed = gateway, threading.Event(), 0, []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with openai.OpenAI(base_url=self.gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20) as client:
            while not self.stop.is_set():
                try:
                    client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "keepalive"}])
                    self.ok += 1
                except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                    self.failed.append(repr(exc))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def logdb(*args: str, server_id: str = "srv-a") -> str:
    env = {**os.environ, "AIPROXY_API_KEY": ADMIN_KEY, "LOGDB_SERVER_ID": server_id}
    done = subprocess.run(
        [sys.executable, "-c", "from aiproxy.entrypoints.logdb import main; raise SystemExit(main())", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def assert_b_holds_a_dialogs(a: GatewayProcess, b: GatewayProcess, topic: str, b_topic: str) -> None:
    """B finds A's requests and its own; every dialog of A's requests has on B the same id and
    the same turns as on A (however A's store threaded them)."""
    on_a = wait_for(a, topic, 6)
    on_b = wait_for(b, topic, 6)
    assert {(h["request_id"], h["dialog_id"]) for h in on_b} == {(h["request_id"], h["dialog_id"]) for h in on_a}
    assert {h["server_id"] for h in on_b} == {"srv-a"}
    assert {h["server_id"] for h in search(b, b_topic)} == {"srv-b"}  # B's own requests are still found
    turns = {d: dialog_turns(a, d) for d in {h["dialog_id"] for h in on_a}}
    assert max(len(t) for t in turns.values()) >= 3  # multi-turn dialogs exist
    assert {d: dialog_turns(b, d) for d in turns} == turns


def test_a_bundle_of_server_a_reaches_server_b_over_grpc(gateways, tmp_path):
    a, b = gateways
    chat(a, "astronomy")
    chat(b, "botany", conversations=1)
    wait_for(a, "astronomy", 6)
    wait_for(b, "botany", 3)
    today = datetime.now(UTC).date().isoformat()
    with Traffic(a) as traffic:
        logdb("bundle", "pull", "--from", f"grpc://{a.grpc_target}", "--since", today, "--to", today,
              "--out", f"{tmp_path}/")
        (bundle,) = tmp_path.glob("*.tgz")
        out = logdb("bundle", "transfer", str(bundle), f"grpc://{b.grpc_target}")
        time.sleep(0.5)
    assert "complete=True" in out and traffic.ok > 0 and not traffic.failed
    assert_b_holds_a_dialogs(a, b, "astronomy", "botany")


def test_the_same_through_a_local_file_transfer_and_import(gateways, tmp_path):
    a, b = gateways
    chat(a, "geology")
    chat(b, "zoology", conversations=1)  # B's own requests (the test before chatted "botany": not relied on)
    wait_for(a, "geology", 6)
    wait_for(b, "zoology", 3)
    today = datetime.now(UTC).date().isoformat()
    with Traffic(a) as traffic:
        created = logdb("bundle", "create", "--since", today, "--to", today, "--db", str(a.log_dir / "db"),
                        "--out", f"{tmp_path}/outbox/")
        (bundle,) = (tmp_path / "outbox").glob("*.tgz")
        logdb("bundle", "transfer", str(bundle), f"{tmp_path}/inbox/")
        logdb("bundle", "import", str(tmp_path / "inbox" / bundle.name), "--dest", str(b.log_dir / "db"),
              server_id="srv-b")
    assert "rows=" in created and traffic.ok > 0 and not traffic.failed
    assert_b_holds_a_dialogs(a, b, "geology", "zoology")
