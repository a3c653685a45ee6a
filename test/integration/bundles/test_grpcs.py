"""`grpcs://` targets: push and pull over TLS against a gateway with a throwaway CA (trustme)."""

from datetime import date

import pytest

from aiproxy.logstore.bundles.manifest import UnusableInput
from aiproxy.logstore.bundles.remote import pull, push
from aiproxy.testing.gateway import ADMIN_KEY, GatewayProcess

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"cert": directory / "server.pem", "key": directory / "server.key", "ca": directory / "ca.pem"}
    cert.private_key_pem.write_to_path(files["key"])
    files["cert"].write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(files["ca"])
    env = {"TLS_CERT_FILE": str(files["cert"]), "TLS_KEY_FILE": str(files["key"]), "LOGDB_SERVER_ID": "srv-tls"}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), env=env) as gateway:
        yield gateway, str(files["ca"])


def test_push_and_pull_over_tls(tls, bundle, tmp_path):
    gateway, ca_file = tls
    target = f"grpcs://127.0.0.1:{gateway.grpc_port}"
    reply = push(bundle, target, api_key=ADMIN_KEY, ca_file=ca_file)
    assert reply["complete"] and reply["rows_imported"] == 9
    pulled = pull(target, date(2025, 9, 1), date(2025, 9, 30), f"{tmp_path}/", api_key=ADMIN_KEY, ca_file=ca_file)
    assert pulled.path.is_file() and pulled.bytes > 0


def test_a_target_that_is_not_a_grpc_url_is_refused(bundle):
    with pytest.raises(UnusableInput, match="grpc://HOST:PORT"):
        push(bundle, "grpc://no-port", api_key=ADMIN_KEY)
