"""`grpc://HOST:PORT` targets that cannot be one are usage errors (exit 2), never a traceback."""

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
