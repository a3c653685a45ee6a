"""`grpc://HOST:PORT` targets that cannot be one are usage errors (exit 2), never a traceback."""

from concurrent import futures

import grpc
import pytest

from aiproxy.entrypoints.logdb import main
from aiproxy.logstore.bundles.manifest import UnusableInput
from aiproxy.logstore.bundles.remote import open_channel


@pytest.mark.parametrize("target", ["grpc://no-port", "grpc://h:abc", "grpc://h:99999", "grpc://[::1", "grpcs://:5"])
def test_a_target_that_is_not_a_grpc_url_is_a_usage_error(tmp_path, capsys, target):
    """A port urlsplit cannot read raised a ValueError traceback; the others exited 1."""
    with pytest.raises(UnusableInput, match="is not grpc://HOST:PORT"):
        open_channel(target)
    bundle = tmp_path / "b.tgz"
    bundle.write_bytes(b"x")
    assert main(["bundle", "transfer", str(bundle), target]) == 2
    assert main(["bundle", "pull", "--from", target, "--since", "2025-09-01", "--to", "2025-09-02",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("is not grpc://HOST:PORT") == 2


def test_an_ipv6_target_reaches_its_host_and_port():
    """The brackets were dropped: grpc://[::1]:PORT dialled '::1:PORT', which gRPC reads as
    another address on port 443."""
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("[::1]:0")
    if not port:
        pytest.skip("no IPv6 loopback here")
    server.start()
    try:
        with open_channel(f"grpc://[::1]:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        server.stop(0)
