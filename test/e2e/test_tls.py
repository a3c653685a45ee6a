"""Native TLS: the REST facade and the gRPC server with a throwaway CA made by trustme."""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import grpc
import httpx
import openai
import pytest

from aiproxy.testing.gateway import ADMIN_KEY, CLIENT_KEY, SETTINGS_FILE, GatewayProcess
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    cert.private_key_pem.write_to_path(key_path)
    cert.cert_chain_pems[0].write_to_path(cert_path)
    for extra in cert.cert_chain_pems[1:]:
        with open(cert_path, "ab") as handle:
            handle.write(extra.bytes())
    ca.cert_pem.write_to_path(ca_path)
    return {"cert": cert_path, "key": key_path, "ca": ca_path}


@pytest.fixture(scope="module")
def tls_gateway(tls_files, upstream, tmp_path_factory):
    env = {"TLS_CERT_FILE": str(tls_files["cert"]), "TLS_KEY_FILE": str(tls_files["key"])}
    with GatewayProcess(tmp_path_factory.mktemp("tlsgw"), upstream_url=upstream.base_url, env=env) as gw:
        yield gw


def https(gw: GatewayProcess) -> str:
    return f"https://127.0.0.1:{gw.port}/v1"


def test_openai_sdk_over_https(tls_gateway, tls_files):
    http_client = httpx.Client(verify=ssl.create_default_context(cafile=str(tls_files["ca"])))
    client = openai.OpenAI(base_url=https(tls_gateway), api_key=CLIENT_KEY, max_retries=0, http_client=http_client)
    reply = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "secure"}])
    assert reply.choices[0].message.content == "secure"
    stream = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "a b"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "a b"
    health = http_client.get(f"https://127.0.0.1:{tls_gateway.port}/health")
    assert health.headers["strict-transport-security"].startswith("max-age=31536000")


def test_a_json_answer_larger_than_the_write_buffer_over_https(tls_gateway, tls_files):
    """Such an answer is written in pieces by the facade (chat_routes._answer), through TLS too."""
    http_client = httpx.Client(verify=ssl.create_default_context(cafile=str(tls_files["ca"])))
    client = openai.OpenAI(base_url=https(tls_gateway), api_key=CLIENT_KEY, max_retries=0, http_client=http_client)
    content = "z" * (3 * 1024 * 1024)
    reply = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content == content


def test_plain_http_is_refused_on_the_tls_port(tls_gateway):
    with pytest.raises(httpx.HTTPError):  # the TLS handshake fails: no plain-text answer at all
        httpx.get(f"http://127.0.0.1:{tls_gateway.port}/health", timeout=3)


def test_untrusted_certificate_is_rejected_by_clients(tls_gateway):
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{tls_gateway.port}/health", timeout=3)


def test_grpc_over_tls(tls_gateway, tls_files):
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_files["ca"].read_bytes())
    with grpc.secure_channel(tls_gateway.grpc_target, credentials) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.ChatCompletionRequest(model="mock")
        request.messages.add(role="user", content_text="over tls")
        reply = stub.CreateChatCompletion(request, metadata=(("authorization", f"Bearer {CLIENT_KEY}"),))
        assert reply.choices[0].message.content_text == "over tls"
    with grpc.insecure_channel(tls_gateway.grpc_target) as plain:
        with pytest.raises(grpc.RpcError):
            chat_pb2_grpc.ChatServiceStub(plain).ListModels(chat_pb2.ListModelsRequest(), timeout=3)


def test_idle_keep_alive_connections_do_not_hold_a_stop(tls_files, upstream, tmp_path):
    """Was: a TLS connection the gateway closes (idle at a stop, or by the keep-alive timeout shortly
    before) stayed until the client answered its close_notify, which the SDK's idle pooled connection
    never does: every stop (the restart after a certificate renewal) took all of SHUTDOWN_GRACE_SECONDS
    and warned of requests in flight, where plain HTTP takes ~1 s."""
    env = {"TLS_CERT_FILE": str(tls_files["cert"]), "TLS_KEY_FILE": str(tls_files["key"]),
           "SHUTDOWN_GRACE_SECONDS": "20", "REQUEST_BODY_TIMEOUT_SECONDS": "2"}
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, env=env) as gw:
        verify = ssl.create_default_context(cafile=str(tls_files["ca"]))
        with httpx.Client(verify=verify) as first, httpx.Client(verify=verify) as second:
            for http_client in (first, second):  # the first one's connection is closed by the keep-alive timeout
                client = openai.OpenAI(base_url=https(gw), api_key=CLIENT_KEY, max_retries=0, http_client=http_client)
                client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "then idle"}])
                time.sleep(2.5 if http_client is first else 0)
            signalled = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            assert gw.proc.wait(30) == 0
            assert time.monotonic() - signalled < 5
    assert "ending what is still in flight" not in gw.stderr_path.read_text()


def test_a_handshake_that_never_completes_is_bounded_by_the_request_timeout(tls_files, upstream, tmp_path):
    """Was: a connection that never finished its TLS handshake (a slowloris, a half-sent ClientHello)
    was held for asyncio's 60 s, whatever REQUEST_BODY_TIMEOUT_SECONDS, which bounds a request head."""
    env = {"TLS_CERT_FILE": str(tls_files["cert"]), "TLS_KEY_FILE": str(tls_files["key"]),
           "REQUEST_BODY_TIMEOUT_SECONDS": "2"}
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, env=env) as gw:
        with socket.create_connection(("127.0.0.1", gw.port)) as stalled:
            stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, never finished
            stalled.settimeout(30)
            opened = time.monotonic()
            assert stalled.recv(100) == b""
            assert time.monotonic() - opened < 5


def test_grpc_mutual_tls(ca, tls_files, upstream, tmp_path):
    env = {"TLS_CERT_FILE": str(tls_files["cert"]), "TLS_KEY_FILE": str(tls_files["key"]),
           "TLS_CLIENT_CA_FILE": str(tls_files["ca"])}
    client_cert = ca.issue_cert("client@example")
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, env=env) as gw:
        root = tls_files["ca"].read_bytes()
        good = grpc.ssl_channel_credentials(root, client_cert.private_key_pem.bytes(),
                                            client_cert.cert_chain_pems[0].bytes())
        with grpc.secure_channel(gw.grpc_target, good) as channel:
            assert chat_pb2_grpc.ChatServiceStub(channel).ListModels(chat_pb2.ListModelsRequest()).data
        with grpc.secure_channel(gw.grpc_target, grpc.ssl_channel_credentials(root)) as channel:
            with pytest.raises(grpc.RpcError):
                chat_pb2_grpc.ChatServiceStub(channel).ListModels(chat_pb2.ListModelsRequest(), timeout=3)


@pytest.fixture(scope="module")
def mtls_gateway(ca, tls_files, tmp_path_factory):
    """A gateway whose gRPC listener requires a client certificate, and one such certificate."""
    directory = tmp_path_factory.mktemp("mtls")
    client = ca.issue_cert("logdb@example")
    files = {"cert": directory / "client.pem", "key": directory / "client.key"}
    client.cert_chain_pems[0].write_to_path(files["cert"])
    client.private_key_pem.write_to_path(files["key"])
    env = {"TLS_CERT_FILE": str(tls_files["cert"]), "TLS_KEY_FILE": str(tls_files["key"]),
           "TLS_CLIENT_CA_FILE": str(tls_files["ca"]), "LOGDB_ENABLED": "true", "LOGDB_SERVER_ID": "srv-mtls"}
    with GatewayProcess(directory / "gw", env=env) as gw:
        yield gw, files


def test_failed_handshakes_keep_stderr_json_lines(mtls_gateway, tls_files):
    """A client without a certificate (or one that distrusts the gateway's) fails the handshake:
    gRPC's own report of that must not put plain-text lines into the JSON-lines log on stderr."""
    gw, _ = mtls_gateway
    with grpc.secure_channel(gw.grpc_target, grpc.ssl_channel_credentials(tls_files["ca"].read_bytes())) as channel:
        with pytest.raises(grpc.RpcError):
            chat_pb2_grpc.ChatServiceStub(channel).ListModels(chat_pb2.ListModelsRequest(), timeout=3)
    time.sleep(0.5)  # the gateway writes its report of the failed handshake after the client gave up
    lines = gw.stderr_path.read_text().splitlines()
    assert [line for line in lines if not line.startswith("{")] == []


def logdb(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIPROXY_", "LOGDB_"))}
    return subprocess.run(
        [sys.executable, "-c", "from aiproxy.entrypoints.logdb import main; raise SystemExit(main())", *args],
        capture_output=True, text=True, env={**environ, "AIPROXY_API_KEY": ADMIN_KEY, **env}, timeout=120,
    )


def test_logdb_presents_a_client_certificate(mtls_gateway, tls_files, tmp_path):
    gw, client = mtls_gateway
    url, ca_file = f"grpcs://{gw.grpc_target}", str(tls_files["ca"])
    pair = ("--client-cert", str(client["cert"]), "--client-key", str(client["key"]))
    stats = logdb("stats", "--json", "--remote", url, "--ca-file", ca_file, *pair)
    assert stats.returncode == 0, stats.stderr
    assert '"server_id": "srv-mtls"' in stats.stdout or '"server_id":"srv-mtls"' in stats.stdout
    # the bundle commands, with the pair from the environment
    from_env = {"AIPROXY_CLIENT_CERT": str(client["cert"]), "AIPROXY_CLIENT_KEY": str(client["key"])}
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    pulled = logdb("bundle", "pull", "--from", url, "--since", today, "--to", today, "--out", f"{tmp_path}/",
                   "--ca-file", ca_file, **from_env)
    assert pulled.returncode == 0, pulled.stderr
    (bundle,) = tmp_path.glob("*.tgz")
    pushed = logdb("bundle", "transfer", str(bundle), url, "--ca-file", ca_file, **from_env)
    assert pushed.returncode == 0 and "complete=True" in pushed.stdout, pushed.stderr
    # without one, the refusal says what to pass
    refused = logdb("stats", "--remote", url, "--ca-file", ca_file)
    assert refused.returncode == 1 and "--client-cert" in refused.stderr, refused.stderr
    # a gateway whose certificate it does not trust: logdb's line, and no line of gRPC C-core's before it
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other_ca)
    distrusted = logdb("stats", "--remote", url, "--ca-file", str(other_ca), *pair)
    assert distrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in distrusted.stderr, distrusted.stderr
    assert len(distrusted.stderr.splitlines()) == 1, distrusted.stderr


@pytest.mark.parametrize(("problem", "says"), [
    ("key alone", "--client-cert and --client-key"),
    ("missing", "--client-cert"),
    ("mismatched", "do not form a valid pair"),
    ("encrypted", "passphrase"),
    ("PEM text", "PEM text"),
])
def test_logdb_client_certificate_problems_are_one_clear_line(problem, says, mtls_gateway, ca, tls_files, tmp_path):
    gw, client = mtls_gateway
    cert, key = str(client["cert"]), tmp_path / "client.key"
    key.write_bytes(client["key"].read_bytes())
    if problem == "missing":
        cert = str(tmp_path / "nope.pem")
    elif problem == "mismatched":
        ca.issue_cert("other@example").private_key_pem.write_to_path(key)
    elif problem == "encrypted":
        key.write_bytes(_encrypted(key.read_bytes()))
    pair = ("--client-key", str(key)) if problem == "key alone" else ("--client-cert", cert, "--client-key", str(key))
    if problem == "PEM text":  # the key itself instead of its file: never echoed
        pair = ("--client-cert", cert, "--client-key", key.read_text())
    for command in (("stats", "--remote", f"grpcs://{gw.grpc_target}"),
                    ("bundle", "pull", "--from", f"grpcs://{gw.grpc_target}", "--since", "2025-01-01",
                     "--to", "2025-01-01", "--out", f"{tmp_path}/")):
        done = logdb(*command, "--ca-file", str(tls_files["ca"]), *pair)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and "PRIVATE KEY" not in done.stderr


def _encrypted(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"passphrase"))


@pytest.mark.parametrize(("problem", "setting", "says"), [
    ("missing", "TLS_KEY_FILE", "No such file"),
    ("mismatched", "TLS_KEY_FILE", "valid pair"),
    ("unreadable", "TLS_KEY_FILE", "Permission denied"),
    ("encrypted", "TLS_KEY_FILE", "passphrase"),
    ("PEM text instead of a path", "TLS_KEY_FILE", "PEM text"),
    ("a certificate as the key", "TLS_KEY_FILE", "no PEM private key"),
    ("empty certificate", "TLS_CERT_FILE", "no PEM certificate"),
    ("expired", "TLS_CERT_FILE", "expired"),
    ("bad client CA", "TLS_CLIENT_CA_FILE", "not a PEM bundle"),
    ("client CA without TLS", "TLS_CLIENT_CA_FILE", "TLS_CERT_FILE"),
])
def test_bad_certificate_files_stop_startup_clearly(problem, setting, says, ca, tls_files, tmp_path):
    command = [sys.executable, "-c", "from aiproxy.entrypoints.aiproxy import main; raise SystemExit(main())"]
    cert, key = tls_files["cert"], tmp_path / "server.key"
    key.write_bytes(tls_files["key"].read_bytes())
    env = {"PATH": os.environ["PATH"], "API_KEYS": "k", "SETTINGS_FILE": str(SETTINGS_FILE), "LOG_DIR": str(tmp_path),
           "PORT": "0", "GRPC_PORT": "0"}
    if problem == "missing":
        key = tmp_path / "nope.key"
    elif problem == "mismatched":
        ca.issue_cert("other.example").private_key_pem.write_to_path(key)
    elif problem == "unreadable":
        key.chmod(0)
        if os.geteuid() == 0:  # root reads any file, unless it lacks the capabilities to
            if not shutil.which("setpriv"):
                pytest.skip("needs setpriv to drop root's file capabilities")
            command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    elif problem == "encrypted":
        key.write_bytes(_encrypted(key.read_bytes()))
    elif problem == "a certificate as the key":
        key.write_bytes(cert.read_bytes())
    elif problem == "empty certificate":
        cert = tmp_path / "empty.pem"
        cert.write_bytes(b"")
    elif problem == "expired":
        old = ca.issue_cert("127.0.0.1", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        cert, key = tmp_path / "old.pem", tmp_path / "old.key"
        old.cert_chain_pems[0].write_to_path(cert)
        old.private_key_pem.write_to_path(key)
    elif problem == "bad client CA":
        (tmp_path / "ca.pem").write_bytes(key.read_bytes())  # a key, not a certificate
        env["TLS_CLIENT_CA_FILE"] = str(tmp_path / "ca.pem")
    if problem == "client CA without TLS":
        env["TLS_CLIENT_CA_FILE"] = str(tls_files["ca"])
    else:
        env |= {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}
    if problem == "PEM text instead of a path":  # the key pasted into the setting (or a secret mounted as a variable)
        env["TLS_KEY_FILE"] = key.read_text()
    result = subprocess.run(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result.stderr
    assert setting in result.stderr and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "pass phrase" not in result.stderr + result.stdout
    assert "PRIVATE KEY" not in result.stderr + result.stdout  # no key material in what ends up in the journal
    assert "PEM lib" not in result.stderr  # OpenSSL's words, which say neither which file nor what is wrong


def test_logdb_reaches_a_gateway_whose_certificate_names_another_host(ca, tls_files, tmp_path):
    """Was: no way to dial a gateway by IP address (or through a tunnel) when its certificate names
    its host name: the handshake failed, where grpcurl has -authority."""
    cert = ca.issue_cert("logs.internal.example")
    cert.private_key_pem.write_to_path(tmp_path / "server.key")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    env = {"TLS_CERT_FILE": str(tmp_path / "server.pem"), "TLS_KEY_FILE": str(tmp_path / "server.key"),
           "LOGDB_ENABLED": "true", "LOGDB_SERVER_ID": "srv-named"}
    with GatewayProcess(tmp_path / "gw", env=env) as gw:
        url, trust = f"grpcs://{gw.grpc_target}", ("--ca-file", str(tls_files["ca"]))
        mismatch = logdb("stats", "--remote", url, *trust)
        assert mismatch.returncode == 1, mismatch.stderr
        named = ("--tls-server-name", "logs.internal.example")
        stats = logdb("stats", "--json", "--remote", url, *trust, *named)
        assert stats.returncode == 0 and "srv-named" in stats.stdout, stats.stderr
        today = datetime.datetime.now(datetime.UTC).date().isoformat()
        pulled = logdb("bundle", "pull", "--from", url, "--since", today, "--to", today, "--out", f"{tmp_path}/",
                       *trust, *named)
        assert pulled.returncode == 0, pulled.stderr
