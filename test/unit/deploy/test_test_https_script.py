"""deployments/scripts/test-https.sh against a local stand-in for Traefik + aiproxy: an HTTP port that
redirects and an HTTPS port with a throwaway CA (trustme), routed by Host like Traefik. curl's --resolve
(the script's --connect-ip) sends the test host names to 127.0.0.1, so no DNS and no network."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme")

SCRIPT = Path(__file__).resolve().parents[3] / "deployments" / "scripts" / "test-https.sh"
DOMAIN = "aiproxy.test"
API_KEY = "sk-aiproxy-test-key"

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl")), reason="test-https.sh needs curl and openssl"
)


@dataclass
class Behaviour:
    """What the stand-in does; a test flips one thing to see the script fail."""

    redirect: bool = True
    hsts: bool = True
    dashboard_open: bool = False
    require_key: bool = True
    requests: list[str] = field(default_factory=list)


def make_handler(behaviour: Behaviour, https_port: int, tls: bool):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def send(self, status: int, body: dict | str, headers: dict[str, str] | None = None):
            data = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if tls and behaviour.hsts:
                self.send_header("Strict-Transport-Security", "max-age=31536000")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def route(self):
            host = self.headers.get("Host", "").split(":")[0]
            behaviour.requests.append(f"{'https' if tls else 'http'} {host} {self.command} {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if not tls:
                if behaviour.redirect:
                    location = f"https://{host}:{https_port}{self.path}"
                    return self.send(308, "", {"Location": location})
                return self.send(200, {"status": "ok"})
            if host == f"traefik.{DOMAIN}":
                if behaviour.dashboard_open:
                    return self.send(200, "<html>dashboard</html>")
                return self.send(401, "401 Unauthorized\n", {"WWW-Authenticate": 'Basic realm="traefik"'})
            if host != DOMAIN:
                return self.send(404, "404 page not found\n")
            if self.path == "/health":
                return self.send(200, {"status": "ok", "version": "0.1.0"})
            if self.path == "/v1/chat/completions" and self.command == "POST":
                if behaviour.require_key and self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self.send(
                        401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}}
                    )
                model = json.loads(body)["model"]
                return self.send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": model,
                        "choices": [{"index": 0}],
                    },
                )
            return self.send(404, {"error": {"message": "not found"}})

        do_GET = do_POST = route

    return Handler


@dataclass
class StandIn:
    http_port: int
    https_port: int
    ca_file: Path
    behaviour: Behaviour


@pytest.fixture()
def stand_in(tmp_path: Path) -> Iterator[StandIn]:
    ca = trustme.CA()
    cert = ca.issue_cert(DOMAIN, f"traefik.{DOMAIN}", f"grpc.{DOMAIN}")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    # Like Traefik: HTTP/2 offered by ALPN (the script uses it to check the gRPC host).
    context.set_alpn_protocols(["h2", "http/1.1"])

    behaviour = Behaviour()
    https = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    https_port = https.server_address[1]
    https.RequestHandlerClass = make_handler(behaviour, https_port, tls=True)
    https.socket = context.wrap_socket(https.socket, server_side=True)
    http = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(behaviour, https_port, tls=False))
    servers = [http, https]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield StandIn(http.server_address[1], https_port, ca_file, behaviour)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def run_script(stand_in: StandIn, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / ".env").write_text(
        f"DOMAIN={DOMAIN}\nAPI_KEYS={API_KEY},sk-second\n"
        f"HTTP_PORT={stand_in.http_port}\nHTTPS_PORT={stand_in.https_port}\n"
    )
    return subprocess.run(
        ["bash", str(SCRIPT), "--dir", str(project), "--connect-ip", "127.0.0.1",
         "--ca-file", str(stand_in.ca_file), "--issuer", "trustme", "--timeout", "10", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_all_checks_pass_against_a_good_deployment(stand_in: StandIn, tmp_path: Path):
    result = run_script(stand_in, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    for check in ("redirect:", "certificate issuer:", "certificate expiry:", "health:", "HSTS:", "auth:",
                  "chat:", "dashboard:", "gRPC:"):  # fmt: skip
        assert f"PASS  {check}" in result.stdout, check
    assert "9 checks passed, 0 failed" in result.stdout
    # The chat call really went out with the first key of API_KEYS.
    assert f"https {DOMAIN} POST /v1/chat/completions" in stand_in.behaviour.requests


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"redirect": False}, "redirect:"),
        ({"hsts": False}, "HSTS:"),
        ({"dashboard_open": True}, "dashboard:"),
        ({"require_key": False}, "auth:"),
    ],
)
def test_each_problem_fails_the_run(stand_in: StandIn, tmp_path: Path, change: dict, failing: str):
    for key, value in change.items():
        setattr(stand_in.behaviour, key, value)
    result = run_script(stand_in, tmp_path)
    assert result.returncode == 1, result.stdout
    assert f"FAIL  {failing}" in result.stdout


def test_wrong_issuer_and_short_expiry_fail(stand_in: StandIn, tmp_path: Path):
    result = run_script(stand_in, tmp_path, "--issuer", "Let's Encrypt", "--min-days", "500000")
    assert result.returncode == 1
    assert "FAIL  certificate issuer:" in result.stdout
    assert "FAIL  certificate expiry:" in result.stdout


def test_wrong_api_key_fails_the_chat_check(stand_in: StandIn, tmp_path: Path):
    result = run_script(stand_in, tmp_path, "--api-key", "sk-wrong", "--skip", "redirect,cert,dashboard,grpc")
    assert result.returncode == 1
    assert "FAIL  chat: model mock answered 401" in result.stdout


def test_nothing_listening_fails(tmp_path: Path):
    project = tmp_path / "p"
    project.mkdir()
    (project / ".env").write_text("DOMAIN=aiproxy.test\nHTTP_PORT=9\nHTTPS_PORT=9\n")
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dir", str(project), "--connect-ip", "127.0.0.1", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "0 checks passed" in result.stdout


def test_missing_domain_is_a_usage_error(tmp_path: Path):
    result = subprocess.run(["bash", str(SCRIPT), "--dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no domain" in result.stderr


def test_grpc_host_without_a_valid_certificate_fails(stand_in: StandIn, tmp_path: Path):
    """HTTP/2 alone is not enough: gRPC clients verify the certificate, so the check must too (an ACME
    failure for grpc.DOMAIN leaves Traefik's default certificate there)."""
    only_grpc = ("--skip", "redirect,cert,health,chat,dashboard")
    result = run_script(stand_in, tmp_path, "--grpc-host", f"other.{DOMAIN}", *only_grpc)
    assert result.returncode == 1, result.stdout
    expected = f"FAIL  gRPC: other.{DOMAIN}:{stand_in.https_port} certificate not accepted (Verify return code: 62"
    assert expected in result.stdout
    result = run_script(stand_in, tmp_path, *only_grpc, "--ca-file", "/dev/null")  # an unknown CA
    assert "FAIL  gRPC:" in result.stdout, result.stdout
