"""Bundles over gRPC against the real gateway process: ImportBundle (resumable, checksum
checked by the receiver, admin only), GetUploadOffset, CreateBundle (pull)."""

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from datetime import date
from pathlib import Path

import grpc
import pytest

from aiproxy.entrypoints.logdb import main
from aiproxy.logstore.bundles.remote import pull, push
from aiproxy.logstore.bundles.verify import scan_bundle
from aiproxy.rpc.status import ERROR_TRAILER
from aiproxy.testing.bundles import repack
from aiproxy.testing.gateway import ADMIN_KEY, CLIENT_KEY, GatewayProcess
from aiproxypb.v1 import common_pb2, logs_pb2, logs_pb2_grpc

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with GatewayProcess(tmp_path_factory.mktemp("b"), env={"LOGDB_SERVER_ID": "srv-b"}) as gw:
        yield gw


@pytest.fixture()
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield logs_pb2_grpc.LogServiceStub(channel)


def url(server) -> str:
    return f"grpc://{server.grpc_target}"


def stored_rows(server) -> set:
    found = set()
    for path in (server.log_dir / "db").rglob("ai_proxy_*.sqlite3"):
        with sqlite3.connect(path) as conn:
            found |= set(conn.execute("SELECT request_id, server_id, dialog_id FROM requests"))
    return found


def upload(bundle_bytes: bytes, sha: str, offset: int, end: int, *, piece: int = 1000, total: int | None = None):
    total = len(bundle_bytes) if total is None else total
    yield logs_pb2.BundleUploadChunk(start=logs_pb2.BundleUploadStart(bundle_sha256=sha, total_bytes=total,
                                                                      offset=offset))
    for i in range(offset, end, piece):
        yield logs_pb2.BundleUploadChunk(data=bundle_bytes[i : min(i + piece, end)])


def test_push_imports_and_a_second_push_adds_nothing(server, bundle, tmp_path):
    # The module's server: other tests' srv-a rows and unfinished uploads may be there already.
    before, uploads = stored_rows(server), set((server.log_dir / "db" / "incoming").glob("upload-*"))
    reply = push(bundle, url(server), api_key=ADMIN_KEY)
    assert reply["complete"] and reply["rows_imported"] == 9 and reply["source_server_id"] == "srv-a"
    added = stored_rows(server) - before
    assert len(added) == 9 and {r[1] for r in added} == {"srv-a"}
    again = push(bundle, url(server), api_key=ADMIN_KEY)
    assert again["complete"] and again["rows_imported"] == 0 and again["rows_skipped"] == 9
    assert set((server.log_dir / "db" / "incoming").glob("upload-*")) <= uploads


def test_an_upload_interrupted_by_the_client_resumes_where_the_server_stopped(server, stub, tmp_path):
    from aiproxy.logstore.bundles.create import create_bundle
    from aiproxy.testing.bundles import filled_store

    store = filled_store(tmp_path / "c", server_id="srv-c", days=2, topic="falconry")
    bundle = create_bundle(store, date(2025, 9, 1), date(2025, 9, 30), tmp_path / "c.tgz").path
    data = bundle.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    half = len(data) // 2
    sent_half, hang = threading.Event(), threading.Event()

    def interrupted():
        yield from upload(data, sha, 0, half)
        sent_half.set()
        hang.wait(10)  # the client stalls mid-stream, then goes away

    future = stub.ImportBundle.future(interrupted(), metadata=ADMIN)
    assert sent_half.wait(10)
    request = logs_pb2.UploadOffsetRequest(bundle_sha256=sha, total_bytes=len(data))
    held = 0
    for _ in range(100):
        held = stub.GetUploadOffset(request, metadata=ADMIN).offset
        if held == half:
            break
        threading.Event().wait(0.05)
    future.cancel()
    hang.set()
    assert held == half
    reply = push(bundle, url(server), api_key=ADMIN_KEY)
    assert reply["resumed_from"] == half and reply["complete"] and reply["rows_imported"] == 6
    assert len({r for r in stored_rows(server) if r[1] == "srv-c"}) == 6


def test_a_stream_that_ends_early_answers_incomplete(server, stub, bundle):
    data = bundle.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    reply = stub.ImportBundle(upload(data, sha, 0, 100), metadata=ADMIN)
    assert not reply.complete and reply.received_bytes == 100
    finished = stub.ImportBundle(upload(data, sha, 100, len(data)), metadata=ADMIN)
    assert finished.complete and finished.resumed_from == 100


def test_the_receiver_checks_the_checksum(server, stub, bundle):
    data = bundle.read_bytes()
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(grpc.RpcError) as failure:
        stub.ImportBundle(upload(data, wrong, 0, len(data)), metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.DATA_LOSS
    offset = stub.GetUploadOffset(logs_pb2.UploadOffsetRequest(bundle_sha256=wrong, total_bytes=len(data)), metadata=ADMIN)
    assert offset.offset == 0  # the bad bytes are gone


def test_skipping_ahead_is_refused(server, stub, bundle):
    data = bundle.read_bytes()
    sha = hashlib.sha256(data + b"!").hexdigest()
    with pytest.raises(grpc.RpcError) as failure:
        stub.ImportBundle(upload(data, sha, 50, 60), metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "resume from 0" in failure.value.details()


@pytest.mark.parametrize(("key", "code"), [(CLIENT_KEY, grpc.StatusCode.PERMISSION_DENIED),
                                           ("", grpc.StatusCode.UNAUTHENTICATED)])
def test_only_admin_keys_may_import_or_pull(server, bundle, tmp_path, key, code, monkeypatch):
    monkeypatch.delenv("AIPROXY_API_KEY", raising=False)
    with pytest.raises(grpc.RpcError) as failure:
        push(bundle, url(server), api_key=key)
    assert failure.value.code() == code
    with pytest.raises(grpc.RpcError) as failure:
        pull(url(server), date(2025, 9, 1), date(2025, 9, 30), tmp_path / "x.tgz", api_key=key)
    assert failure.value.code() == code


def test_cli_transfer_to_grpc_and_pull(server, bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIPROXY_API_KEY", ADMIN_KEY)
    assert main(["bundle", "transfer", str(bundle), url(server)]) == 0
    assert "complete=True" in capsys.readouterr().out
    out = tmp_path / "pulled"
    out.mkdir()
    assert main(["bundle", "pull", "--from", url(server), "--since", "2025-09-01", "--to", "2025-09-30",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")
    (pulled,) = out.iterdir()
    report = scan_bundle(pulled)
    assert report.ok and report.metadata["server_id"] == "srv-b" and report.metadata["rows"] >= 9
    assert main(["bundle", "pull", "--from", url(server), "--since", "2025-09-02", "--to", "2025-09-01",
                 "--out", str(out)]) == 2  # refused before it asks the server
    assert "is after" in capsys.readouterr().err


def test_cli_transfer_of_a_seed_weekly_bundle_to_grpc(server, seed_weekly_bundle, monkeypatch, capsys):
    monkeypatch.setenv("AIPROXY_API_KEY", ADMIN_KEY)
    assert main(["bundle", "transfer", str(seed_weekly_bundle), url(server)]) == 0
    assert "complete=True" in capsys.readouterr().out
    assert len({r for r in stored_rows(server) if r[1] == "srv-w"}) == 9


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_remote_and_local_bundle_errors_exit_alike_and_name_no_server_path(server, bundle, tmp_path, damage, capsys,
                                                                           monkeypatch):
    monkeypatch.setenv("AIPROXY_API_KEY", ADMIN_KEY)
    if damage == "flipped":  # a readable archive whose member does not match metadata.json: a bad bundle
        bad = repack(bundle, tmp_path / "bad.tgz", lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n.startswith("db/") else d)
        expected = 1
    else:  # not a complete gzip tar: unusable input
        bad = tmp_path / "bad.tgz"
        bad.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
        expected = 2
    assert main(["bundle", "import", str(bad), "--dest", str(tmp_path / "local-db")]) == expected
    capsys.readouterr()
    assert main(["bundle", "transfer", str(bad), url(server)]) == expected
    err = capsys.readouterr().err
    assert "bad.tgz" in err and "incoming" not in err and "upload-" not in err


@pytest.mark.parametrize("total", [-1, -5])
def test_negative_sizes_are_invalid_arguments(stub, total):
    sha = hashlib.sha256(b"x").hexdigest()
    for call in (lambda: stub.GetUploadOffset(logs_pb2.UploadOffsetRequest(bundle_sha256=sha, total_bytes=total),
                                              metadata=ADMIN),
                 lambda: stub.ImportBundle(upload(b"", sha, 0, 0, total=total), metadata=ADMIN)):
        with pytest.raises(grpc.RpcError) as failure:
            call()
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "negative" in failure.value.details()


def test_an_upload_larger_than_the_free_disk_is_refused_before_writing(server, stub):
    sha = hashlib.sha256(b"huge").hexdigest()
    for call in (lambda: stub.GetUploadOffset(logs_pb2.UploadOffsetRequest(bundle_sha256=sha, total_bytes=2**62),
                                              metadata=ADMIN),
                 lambda: stub.ImportBundle(upload(b"x" * 10, sha, 0, 10, total=2**62), metadata=ADMIN)):
        with pytest.raises(grpc.RpcError) as failure:
            call()
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the store's disk has" in failure.value.details() and "incoming" not in failure.value.details()
    assert not list((server.log_dir / "db" / "incoming").glob(f"upload-{sha}*"))


def test_an_error_quoting_a_huge_client_value_still_arrives(stub):
    """A 20 KB bundle_sha256 quoted whole would exceed gRPC's 16 KiB metadata limit."""
    request = logs_pb2.UploadOffsetRequest(bundle_sha256="f" * 20_000, total_bytes=10)
    with pytest.raises(grpc.RpcError) as failure:
        stub.GetUploadOffset(request, metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details().startswith("bundle_sha256 'fff") and failure.value.details().endswith("[truncated]")


def test_a_second_start_message_is_refused(stub, bundle):
    data = bundle.read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    def twice():
        yield from upload(data, sha, 0, 100)
        yield from upload(data, sha, 100, len(data))

    with pytest.raises(grpc.RpcError) as failure:
        stub.ImportBundle(twice(), metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "second `start`" in failure.value.details()


def test_a_second_upload_of_the_bundle_cannot_rewind_it_while_it_is_checked_and_imported(tmp_path, bundle,
                                                                                          monkeypatch):
    """The upload's lock was released before its checksum and import: a retried transfer of the
    same bundle could rewind the complete file meanwhile (DATA_LOSS for a good upload), or rename
    it away (an UNKNOWN FileNotFoundError)."""
    import asyncio

    from aiproxy.logstore.api import LogApi
    from aiproxy.logstore.bundles.incoming import UploadBusy, Uploads
    from aiproxy.rpc.log_service import LogServicer
    from aiproxy.testing.logrecords import make_store

    data = bundle.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    finish, refused = Uploads.finish, []

    def contested_finish(self, sha256, total_bytes):
        try:
            self.open_at(sha256, total_bytes, 0).close()  # a retry that starts over: rewinds the file
        except UploadBusy:
            refused.append(sha256)
        return finish(self, sha256, total_bytes)

    monkeypatch.setattr(Uploads, "finish", contested_finish)

    async def messages():
        for message in upload(data, sha, 0, len(data), piece=64 * 1024):
            yield message

    store = make_store(tmp_path / "b")
    reply = asyncio.run(LogServicer(LogApi(store, tmp_path)).ImportBundle(messages(), context=None))
    assert refused == [sha] and reply.complete and reply.rows_imported == 9
    assert not list((tmp_path / "b" / "incoming").glob("upload-*"))
    store.close()


def _detail(error: grpc.RpcError) -> common_pb2.ErrorDetail:
    return common_pb2.ErrorDetail.FromString(dict(error.trailing_metadata())[ERROR_TRAILER])


def test_bundle_errors_carry_the_error_detail_as_every_log_service_error_does(stub, bundle):
    """The bundle methods aborted with a bare status: no aiproxy-error-bin trailer, unlike every other
    LogService (and ChatService) error a client can see."""
    data = bundle.read_bytes()
    wrong = hashlib.sha256(b"something else").hexdigest()
    calls = [
        (lambda: stub.GetUploadOffset(logs_pb2.UploadOffsetRequest(bundle_sha256="nope", total_bytes=1), metadata=ADMIN),
         grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error", "unusable_input"),
        (lambda: list(stub.CreateBundle(logs_pb2.CreateBundleRequest(since="2025-02-01"), metadata=ADMIN)),
         grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error", "unusable_input"),
        (lambda: stub.ImportBundle(upload(data, wrong, 0, len(data)), metadata=ADMIN),
         grpc.StatusCode.DATA_LOSS, 500, "server_error", "bad_bundle"),
    ]
    for call, code, http_status, error_type, error_code in calls:
        with pytest.raises(grpc.RpcError) as failure:
            call()
        detail = _detail(failure.value)
        assert failure.value.code() == code and detail.message == failure.value.details()
        assert (detail.http_status, detail.type, detail.code) == (http_status, error_type, error_code)


def test_cli_without_a_key_is_told_how_to_pass_one(server, tmp_path, monkeypatch, capsys):
    """`logdb: UNAUTHENTICATED: Missing Authorization header` named no way to send a key."""
    monkeypatch.delenv("AIPROXY_API_KEY", raising=False)
    for argv in (["stats", "--remote", server.grpc_target],
                 ["bundle", "pull", "--from", url(server), "--since", "2025-09-01", "--to", "2025-09-30",
                  "--out", str(tmp_path / "x.tgz")]):
        assert main(argv) == 1
        assert capsys.readouterr().err == ("logdb: UNAUTHENTICATED: Missing Authorization header (pass an admin key"
                                           " with --api-key, or set AIPROXY_API_KEY)\n")


def test_cli_with_a_client_key_is_told_it_needs_an_admin_one(server, tmp_path, capsys):
    """`... it needs an admin key (ADMIN_API_KEYS)` named the server's setting, not how logdb sends one."""
    for argv in (["stats", "--remote", server.grpc_target, "--api-key", CLIENT_KEY],
                 ["bundle", "transfer", str(tmp_path / "x.tgz"), url(server), "--api-key", CLIENT_KEY]):
        (tmp_path / "x.tgz").write_bytes(b"x")
        assert main(argv) == 1
        assert capsys.readouterr().err.endswith(" (pass one of the server's ADMIN_API_KEYS with --api-key, or set"
                                                " AIPROXY_API_KEY)\n")


def test_remote_takes_the_grpc_url_the_bundle_commands_take(server, capsys):
    """`--remote grpc://HOST:PORT` (as `bundle pull --from` spells it) was `UNAVAILABLE: errors resolving
    grpc://…: Misformatted domain name`."""
    assert main(["stats", "--remote", url(server), "--api-key", ADMIN_KEY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["server_id"] == "srv-b"
    assert main(["stats", "--remote", "grpc://nohost", "--api-key", ADMIN_KEY]) == 2
    assert capsys.readouterr().err.startswith("logdb: 'grpc://nohost' is not HOST:PORT, grpc://HOST:PORT or grpcs://")


def _released(snapshots: Path, within: float) -> bool:
    """Whether CreateBundle's snapshot (its directory under incoming/, holding the archive it streams
    from) is gone within `within` seconds: the generator's clean-up, after it closed the archive."""
    deadline = time.monotonic() + within
    while list(snapshots.glob("outgoing-*")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def _busy_channel(gw: GatewayProcess):
    """A LogService stub on a channel that other calls keep busy (one every 0.1 s), so that the
    connection never idles out: a stalled call on it ends only if the gateway ends it."""
    stop = threading.Event()
    with grpc.insecure_channel(gw.grpc_target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)

        def other_calls() -> None:
            while not stop.wait(0.1):
                stub.Stats(logs_pb2.StatsRequest(), metadata=ADMIN)

        busy = threading.Thread(target=other_calls)
        busy.start()
        try:
            yield stub
            assert busy.is_alive()  # the other calls went on meanwhile
        finally:
            stop.set()
            busy.join()


def test_a_bundle_pull_its_client_stopped_reading_is_ended_and_its_snapshot_removed(tmp_path):
    """A client that took a bundle's `info` and read no more, its channel busy with other calls: the
    call, its open archive and the snapshot on disk (a copy of every partition in range and the
    archive) were held for as long as the client stayed connected (still after 60 s). Its writes wait
    REQUEST_BODY_TIMEOUT_SECONDS, as a chat stream's do."""
    with GatewayProcess(tmp_path, env={"REQUEST_BODY_TIMEOUT_SECONDS": "1"}) as gw:
        raw = gw.log_dir / "archive"
        raw.mkdir(parents=True)
        (raw / "old.log").write_bytes(os.urandom(48 * 1024 * 1024))  # more than every buffer on the way
        with _busy_channel(gw) as stub:
            request = logs_pb2.CreateBundleRequest(since="2000-01-01", to=date.today().isoformat(), include_raw=True)
            call = stub.CreateBundle(request, metadata=ADMIN)
            assert next(call).info.total_bytes > 48 * 1024 * 1024
            assert _released(gw.log_dir / "db" / "incoming", within=10)
            with pytest.raises(grpc.RpcError) as err:  # a client reading on gets what was queued, then the status
                for _ in call:
                    pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "REQUEST_BODY_TIMEOUT_SECONDS" in err.value.details()
    assert [line for line in gw.stderr_path.read_bytes().splitlines() if b'"level":"ERROR"' in line] == []


def test_an_upload_its_client_stopped_sending_is_ended_and_resumes_later(tmp_path, bundle):
    """A client that sent half a bundle and then nothing more (no close, no cancel), its channel busy
    with other calls: the call, and with it the .part's lock (a resumed upload got ABORTED) and a
    place in the shutdown's drain, were held for as long as the client stayed connected. A silence of
    REQUEST_BODY_TIMEOUT_SECONDS ends it, as it ends a REST body; the bytes received stay to resume."""
    data = bundle.read_bytes()
    sha, half = hashlib.sha256(data).hexdigest(), len(data) // 2
    with GatewayProcess(tmp_path / "gw", env={"REQUEST_BODY_TIMEOUT_SECONDS": "1"}) as gw:
        hang, sent_half = threading.Event(), threading.Event()

        def stalled():
            yield from upload(data, sha, 0, half)
            sent_half.set()
            hang.wait(30)

        try:
            with _busy_channel(gw) as stub:
                future = stub.ImportBundle.future(stalled(), metadata=ADMIN)
                assert sent_half.wait(10)
                error = future.exception(timeout=10)
        finally:
            hang.set()
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "REQUEST_BODY_TIMEOUT_SECONDS" in error.details()
        reply = push(bundle, f"grpc://{gw.grpc_target}", api_key=ADMIN_KEY)
        assert reply["resumed_from"] == half and reply["complete"] and reply["rows_imported"] == 9
    assert [line for line in gw.stderr_path.read_bytes().splitlines() if b'"level":"ERROR"' in line] == []
