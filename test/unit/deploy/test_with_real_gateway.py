"""The deployment pieces against the real `aiproxy serve`: the image's HEALTHCHECK command (plain and
native TLS) and test-https.sh against a gateway with native TLS (throwaway CA from trustme)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme")
from aiproxy.testing.gateway import CLIENT_KEY, COMMAND, SETTINGS_FILE, GatewayProcess, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "deployments" / "Dockerfile"
TEST_HTTPS = REPO / "deployments" / "scripts" / "test-https.sh"


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK CMD of the Dockerfile, with the image's `python` or `aiproxy` replaced by this
    interpreter's."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "no exec-form HEALTHCHECK CMD"
    command = json.loads(match.group(1))
    assert command[0] in ("python", "aiproxy")
    return [*((sys.executable,) if command[0] == "python" else COMMAND), *command[1:]]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    with paths["cert"].open("wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    return paths


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory, tls_files) -> Iterator[GatewayProcess]:
    env = {"TLS_CERT_FILE": str(tls_files["cert"]), "TLS_KEY_FILE": str(tls_files["key"])}
    with GatewayProcess(tmp_path_factory.mktemp("gw-tls"), env=env) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def plain_gateway(tmp_path_factory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("gw-plain")) as gateway:
        yield gateway


def run_healthcheck(env: dict[str, str], cwd: Path | None = None) -> int:
    return subprocess.run(healthcheck_command(), env=env, cwd=cwd, capture_output=True, timeout=30).returncode


def test_healthcheck_passes_on_plain_http(plain_gateway):
    assert run_healthcheck({"PORT": str(plain_gateway.port)}) == 0


def test_healthcheck_passes_with_native_tls(tls_gateway, tls_files):
    env = {"PORT": str(tls_gateway.port), "TLS_CERT_FILE": str(tls_files["cert"]), "TLS_KEY_FILE": str(tls_files["key"])}
    assert run_healthcheck(env) == 0


def test_healthcheck_fails_when_nothing_answers():
    """Was: one line, `<urlopen error [Errno 111] Connection refused>`, in `docker inspect`'s health log:
    no word of the address probed, nor that a port given only as `serve --port` is not one it can see."""
    port = free_port()
    done = subprocess.run(healthcheck_command(), env={"PORT": str(port)}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"http://127.0.0.1:{port}/health" in done.stderr and "serve --port" in done.stderr, done.stderr
    assert "urlopen" not in done.stderr


def test_healthcheck_follows_the_port_of_a_mounted_settings_file(plain_gateway, tmp_path):
    """Was: the check read PORT from the environment only, so a gateway whose port came from the
    settings file (a mounted configs/settings.toml) was probed on 8123 and marked unhealthy."""
    settings = tmp_path / "settings.toml"
    settings.write_text(SETTINGS_FILE.read_text().replace("\nport = 8123\n", f"\nport = {plain_gateway.port}\n", 1))
    assert run_healthcheck({"SETTINGS_FILE": str(settings)}, cwd=tmp_path) == 0


def test_healthcheck_follows_the_port_and_tls_of_dotenv(tls_gateway, tls_files, tmp_path):
    """The gateway reads .env in its working directory; so does the check (the port and TLS there)."""
    (tmp_path / ".env").write_text(f"PORT={tls_gateway.port}\nTLS_CERT_FILE={tls_files['cert']}\n"
                                   f"TLS_KEY_FILE={tls_files['key']}\n")
    assert run_healthcheck({}, cwd=tmp_path) == 0


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_test_https_script_against_native_tls(tls_gateway, tls_files, tmp_path):
    """Native TLS has no port-80 redirect and no dashboard (skipped); gRPC is checked on its own port."""
    result = subprocess.run(
        ["bash", str(TEST_HTTPS), "--dir", str(tmp_path), "--domain", "localhost",
         "--https-port", str(tls_gateway.port), "--ca-file", str(tls_files["ca"]), "--issuer", "trustme",
         "--api-key", CLIENT_KEY, "--skip", "redirect,dashboard", "--timeout", "10",
         "--grpc-host", "localhost", "--grpc-port", str(tls_gateway.grpc_port)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 checks passed, 0 failed" in result.stdout
    assert "PASS  HSTS: Strict-Transport-Security: max-age=" in result.stdout
