"""`logdb bundle pull` against a server that misbehaves: the client decides where files go and
keeps nothing that fails its checks."""

import hashlib
from concurrent import futures

import grpc
import pytest

from aiproxy.entrypoints.logdb import main
from aiproxy.logstore.bundles.manifest import WIRE_CHUNK
from aiproxy.testing.bundles import repack
from aiproxypb.v1 import logs_pb2, logs_pb2_grpc


class _Server(logs_pb2_grpc.LogServiceServicer):
    """CreateBundle answers with `data` under the file name the test chooses."""

    def __init__(self) -> None:
        self.data, self.file_name, self.announced = b"", "", None
        self.calls = self.sent = 0  # CreateBundle calls, data messages the server got to send

    def CreateBundle(self, request, context):
        self.calls += 1
        total = len(self.data) if self.announced is None else self.announced
        info = logs_pb2.BundleInfo(file_name=self.file_name, total_bytes=total,
                                   sha256=hashlib.sha256(self.data).hexdigest())
        yield logs_pb2.BundleChunk(info=info)
        for i in range(0, len(self.data), WIRE_CHUNK):
            yield logs_pb2.BundleChunk(data=self.data[i : i + WIRE_CHUNK])
            self.sent += 1


@pytest.fixture()
def server():
    servicer = _Server()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(2))
    logs_pb2_grpc.add_LogServiceServicer_to_server(servicer, grpc_server)
    servicer.url = f"grpc://127.0.0.1:{grpc_server.add_insecure_port('127.0.0.1:0')}"
    grpc_server.start()
    yield servicer
    grpc_server.stop(None)


def pull(server, out) -> int:
    return main(["bundle", "pull", "--from", server.url, "--since", "2025-09-01", "--to", "2025-09-30",
                 "--out", str(out)])


@pytest.mark.parametrize("name", ["../../pwned.tgz", "{tmp}/abs.tgz", "", "..", "a\\b.tgz", "a\x00.tgz"])
def test_the_server_never_chooses_a_directory(server, bundle, tmp_path, name, capsys):
    server.data, server.file_name = bundle.read_bytes(), name.format(tmp=tmp_path)
    out = tmp_path / "d1" / "d2"
    out.mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    assert pull(server, f"{out}/") == 1
    assert "not a plain file name" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_pulled_bundle_that_fails_verification_is_removed(server, bundle, tmp_path, capsys):
    flipped = repack(bundle, tmp_path / "bad.tgz", lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n.startswith("db/") else d)
    server.data, server.file_name = flipped.read_bytes(), "logs_x.tgz"
    (tmp_path / "out").mkdir()
    assert pull(server, tmp_path / "out") == 1
    assert "sha256 mismatch" in capsys.readouterr().out
    assert list((tmp_path / "out").iterdir()) == []


def test_a_pull_refused_by_a_different_file_keeps_no_part_file(server, bundle, tmp_path, capsys):
    server.data, server.file_name = bundle.read_bytes(), "logs_x.tgz"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "logs_x.tgz").write_bytes(b"another bundle")
    assert pull(server, tmp_path / "out") == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["logs_x.tgz"]


def test_a_missing_output_directory_is_reported_not_created(server, bundle, tmp_path, capsys):
    server.data, server.file_name = bundle.read_bytes(), "logs_x.tgz"
    assert pull(server, f"{tmp_path}/typo/new/") == 2
    assert "no such directory" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_pull_draws_a_progress_bar_on_a_terminal(server, bundle, tmp_path, terminal_stderr):
    server.data, server.file_name = bundle.read_bytes(), "logs_x.tgz"
    stderr = terminal_stderr()
    assert pull(server, tmp_path) == 0
    assert "bundle pull [" in stderr.getvalue() and "100.0%" in stderr.getvalue()


def test_a_server_sending_more_than_it_announced_is_cut_off(server, tmp_path, capsys):
    """The download was written whole and only then hashed: a server announcing 1 KiB could stream
    until the client's disk was full. It stops at the first byte past the announced size."""
    server.data, server.file_name, server.announced = bytes(64 * WIRE_CHUNK), "logs_x.tgz", 1024
    (tmp_path / "out").mkdir()
    assert pull(server, f"{tmp_path / 'out'}/") == 1
    assert "more than the announced 1024 bytes" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == [] and server.sent < 64


def test_an_existing_out_file_is_refused_before_the_server_is_asked(server, bundle, tmp_path, capsys):
    """The pull downloaded the whole bundle (the server having built it) and only then refused to
    replace the file; a pull always brings a new bundle (its own id), so an existing file is never it."""
    server.data, server.file_name = bundle.read_bytes(), "logs_x.tgz"
    out = tmp_path / "backup.tgz"
    out.write_bytes(b"last week's backup")
    before = sorted(tmp_path.rglob("*"))
    assert pull(server, out) == 1
    assert capsys.readouterr().err == f"logdb: {out} exists with different content: refusing to overwrite it\n"
    assert server.calls == 0 and out.read_bytes() == b"last week's backup" and sorted(tmp_path.rglob("*")) == before


def test_an_existing_file_of_the_servers_name_is_refused_before_the_download(server, tmp_path, capsys):
    """--out DIR: the name comes with the server's first message, which is where the pull now stops."""
    server.data, server.file_name = bytes(64 * WIRE_CHUNK), "logs_x.tgz"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "logs_x.tgz").write_bytes(b"another bundle")
    assert pull(server, f"{tmp_path / 'out'}/") == 1
    assert capsys.readouterr().err.endswith("logs_x.tgz exists with different content: refusing to overwrite it\n")
    assert server.calls == 1 and server.sent < 64
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["logs_x.tgz"]
