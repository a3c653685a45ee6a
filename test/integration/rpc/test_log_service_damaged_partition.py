"""The LogService of a real gateway (`aiproxy serve`) over a store whose middle day is damaged:
gRPC answers from the other days with the bad day named in the reply's `warnings`, DATA_LOSS
when the answer needs that day; REST the same as `warnings` and an OpenAI-style 500. Neither ever
shows the server's file paths, and the damaged file is left as it is."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from aiproxy.logstore import partitions
from aiproxy.rpc.status import ERROR_TRAILER
from aiproxy.testing.bundles import damage_partition, filled_store
from aiproxy.testing.gateway import ADMIN_KEY, GatewayProcess
from aiproxy.testing.logrecords import make_store
from aiproxypb.v1 import common_pb2, logs_pb2, logs_pb2_grpc

BAD_DAY = "2025-09-06"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
METADATA = (("authorization", f"Bearer {ADMIN_KEY}"),)


@pytest.fixture(scope="module", params=["damaged_pages", "not_a_database", "empty"])
def served(request, tmp_path_factory):
    """A gateway on a three-day store with the middle day damaged; the ids of a request and a
    dialog of a good and of the bad day."""
    workdir = tmp_path_factory.mktemp(request.param)
    base = workdir / "logs" / "db"
    filled_store(base, days=3, turns=3)
    store = make_store(base, server_id="srv-a")
    ids = {}
    for part in partitions.discover(base):
        with store.connected(part.path) as db:
            ids[str(part.first_day)] = db.execute_sql("SELECT request_id, dialog_id FROM requests LIMIT 1").fetchone()
    store.close()
    bad_path = partitions.partition_path(base, partitions.parse_day(BAD_DAY))
    damage_partition(bad_path, request.param)
    before = hashlib.sha256(bad_path.read_bytes()).hexdigest()
    with GatewayProcess(workdir, env={"LOGDB_SERVER_ID": "srv-a", "LOGDB_ENABLED": "false"}) as gateway:
        yield gateway, ids["2025-09-05"], ids[BAD_DAY], str(workdir)
    assert hashlib.sha256(bad_path.read_bytes()).hexdigest() == before  # never changed


def _named(warnings: list[str], workdir: str) -> None:
    assert len(warnings) == 1 and BAD_DAY in warnings[0] and "ai_proxy_20250906.sqlite3" in warnings[0]
    assert workdir not in warnings[0] and "restore it from a backup" in warnings[0]


def test_grpc_answers_from_the_other_days_and_names_the_bad_one(served):
    gateway, good, _bad, workdir = served
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        for query in ("sailing", ""):
            found = stub.SearchRequests(logs_pb2.SearchRequestsRequest(q=query), metadata=METADATA)
            assert sorted({r.ts[:10] for r in found.results}) == ["2025-09-05", "2025-09-07"]
            assert (len(found.results), found.partitions_searched) == (6, 2)
            _named(found.warnings, workdir)
        listed = stub.ListDialogs(logs_pb2.ListDialogsRequest(), metadata=METADATA)
        assert [d.requests for d in listed.dialogs] == [3, 3]
        _named(listed.warnings, workdir)
        stats = stub.Stats(logs_pb2.StatsRequest(), metadata=METADATA)
        assert (stats.partitions, stats.requests, stats.dialogs) == (2, 6, 2)
        _named(stats.warnings, workdir)
        dialog = stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id=good[1]), metadata=METADATA)
        assert len(dialog.turns) == 3
        _named(dialog.warnings, workdir)
        record = stub.GetRequest(logs_pb2.GetRequestRequest(request_id=good[0]), metadata=METADATA)
        assert record.summary.request_id == good[0]  # a record found is whole: RequestRecord has no warnings
        built = stub.BuildIndex(logs_pb2.BuildIndexRequest(), metadata=METADATA)
        assert len(built.partitions) == 2
        _named(built.warnings, workdir)


def test_grpc_reads_that_need_the_bad_day_are_data_loss(served):
    gateway, _good, bad, workdir = served
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        for method, message in (("GetRequest", logs_pb2.GetRequestRequest(request_id=bad[0])),
                                ("GetDialog", logs_pb2.GetDialogRequest(dialog_id=bad[1]))):
            with pytest.raises(grpc.RpcError) as failed:
                getattr(stub, method)(message, metadata=METADATA)
            error = failed.value
            assert error.code() == grpc.StatusCode.DATA_LOSS, method
            assert BAD_DAY in error.details() and workdir not in error.details()
            detail = common_pb2.ErrorDetail.FromString(dict(error.trailing_metadata())[ERROR_TRAILER])
            assert (detail.http_status, detail.type, detail.code) == (500, "server_error", "partition_unreadable")


def test_rest_says_the_same(served):
    gateway, good, bad, workdir = served
    with httpx.Client(base_url=gateway.root_url, headers=ADMIN, timeout=30) as http:
        for path, params in (("/v1/logs/requests", {"q": "sailing"}), ("/v1/logs/requests", {}),
                             ("/v1/logs/dialogs", {}), ("/v1/logs/stats", {}), (f"/v1/logs/dialogs/{good[1]}", {})):
            response = http.get(path, params=params)
            assert response.status_code == 200, (path, response.text)
            _named(response.json()["warnings"], workdir)
            assert workdir not in response.text
        assert "warnings" not in http.get(f"/v1/logs/requests/{good[0]}").json()
        for path in (f"/v1/logs/requests/{bad[0]}", f"/v1/logs/dialogs/{bad[1]}"):
            response = http.get(path)
            error = response.json()["error"]
            assert response.status_code == 500 and (error["type"], error["code"]) == ("server_error", "partition_unreadable")
            assert BAD_DAY in error["message"] and workdir not in response.text


def test_logdb_remote_prints_the_warning_and_exits_1(served):
    gateway, _good, _bad, workdir = served
    env = {**os.environ, "AIPROXY_API_KEY": ADMIN_KEY}
    cmd = [sys.executable, str(Path(__file__).resolve().parents[3] / "cmd" / "logdb")]
    done = subprocess.run([*cmd, "search", "sailing", "--remote", gateway.grpc_target], capture_output=True, text=True,
                          env=env, timeout=60, cwd=workdir)
    assert done.returncode == 1 and len(done.stdout.splitlines()) == 2 * 6
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("logdb: skipped the partition for 2025-09-06 ")


def test_grpc_ingest_with_a_damaged_control_db_is_data_loss_naming_it(tmp_path):
    """The control DB is no partition: its error was the gateway's own INTERNAL error."""
    base = tmp_path / "logs" / "db"
    filled_store(base, days=1)
    damage_partition(partitions.control_path(base), "not_a_database")
    with GatewayProcess(tmp_path, env={"LOGDB_ENABLED": "false"}) as gateway, \
            grpc.insecure_channel(gateway.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as error:
            logs_pb2_grpc.LogServiceStub(channel).Ingest(logs_pb2.IngestRequest(), metadata=METADATA, timeout=30)
    assert error.value.code() == grpc.StatusCode.DATA_LOSS
    detail = common_pb2.ErrorDetail.FromString(dict(error.value.trailing_metadata())[ERROR_TRAILER])
    assert detail.code == "control_unreadable" and detail.message == error.value.details()
    assert "ingest checkpoints (control.sqlite3)" in detail.message and str(tmp_path) not in detail.message
