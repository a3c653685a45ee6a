"""LogService on a real grpc.aio server (127.0.0.1) and the REST routes in front of it."""

import asyncio
import sqlite3
from datetime import UTC, datetime

import aiohttp
import grpc
import pytest
import yarl
from aiohttp import web

from aiproxy.config import Settings
from aiproxy.httpapi.app import errors_middleware
from aiproxy.httpapi.logs_routes import add_log_routes
from aiproxy.rpc.log_service import add_log_service
from aiproxy.rpc.status import ERROR_TRAILER
from aiproxy.testing.logrecords import conversation, write_jsonl
from aiproxypb.v1 import common_pb2, logs_pb2, logs_pb2_grpc

T0 = datetime(2025, 9, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path):
    turns = [("explain the database timeout", "raise it"), ("and retries?", "use backoff"), ("thanks", "welcome")]
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", conversation(turns, start=T0, gap_s=120))
    return Settings(log_dir=str(tmp_path / "logs"), logdb={"dir": str(tmp_path / "logs" / "db"), "server_id": "srv-1"})


async def _serve(settings):
    server = grpc.aio.server()
    add_log_service(server, settings)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _with_stub(settings, scenario) -> None:
    """Run `scenario(stub)` against a LogService served on a free port."""
    async def run():
        server, target = await _serve(settings)
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                await scenario(logs_pb2_grpc.LogServiceStub(channel))
        finally:
            await server.stop(None)

    asyncio.run(run())


async def _start_rest(app: web.Application) -> tuple[web.AppRunner, str]:
    """The log routes served on a free port: the runner (to clean up) and the base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def test_grpc_methods(settings):
    async def scenario(stub):
        ingested = await stub.Ingest(logs_pb2.IngestRequest())
        assert ingested.rows_inserted == 3
        found = await stub.SearchRequests(logs_pb2.SearchRequestsRequest(q="timeout"))
        assert len(found.results) == 3 and "[timeout]" in found.results[0].snippet  # history repeats
        assert found.results[0].HasField("score")
        record = await stub.GetRequest(logs_pb2.GetRequestRequest(request_id=found.results[0].request_id))
        assert '"explain the database timeout"' in record.request_json
        listed = await stub.ListDialogs(logs_pb2.ListDialogsRequest())
        assert [d.requests for d in listed.dialogs] == [3]
        dialog = await stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id=listed.dialogs[0].dialog_id))
        assert [t.summary.ts_unix for t in dialog.turns] == sorted(t.summary.ts_unix for t in dialog.turns)
        assert len(dialog.turns) == 3 and dialog.turns[1].dialog_parent_id == dialog.turns[0].summary.request_id
        stats = await stub.Stats(logs_pb2.StatsRequest())
        assert (stats.requests, stats.dialogs, stats.server_id) == (3, 1, "srv-1")
        built = await stub.BuildIndex(logs_pb2.BuildIndexRequest(action=logs_pb2.BuildIndexRequest.REBUILD))
        assert built.partitions[0].indexed == 2 + 4 + 6  # every message of every turn

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.SearchRequests(logs_pb2.SearchRequestsRequest(q="timeout AND"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        detail = dict(bad.value.trailing_metadata())[ERROR_TRAILER]
        assert common_pb2.ErrorDetail.FromString(detail).http_status == 400
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id="dlg-nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad_date:
            await stub.Stats(logs_pb2.StatsRequest(since="yesterday"))
        assert bad_date.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as bad_action:
            await stub.BuildIndex(logs_pb2.BuildIndexRequest(action=99))  # not run as BUILD
        assert bad_action.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    _with_stub(settings, scenario)


def test_the_model_filter_ignores_case(settings):
    """Was: SearchRequests/ListDialogs matched `model` case-sensitively, unlike routing."""
    async def scenario(stub):
        await stub.Ingest(logs_pb2.IngestRequest())
        found = await stub.SearchRequests(logs_pb2.SearchRequestsRequest(filter=logs_pb2.LogFilter(model="GPT-4o")))
        assert len(found.results) == 3
        listed = await stub.ListDialogs(logs_pb2.ListDialogsRequest(filter=logs_pb2.LogFilter(model="OpenAI/GPT-4O")))
        assert [d.requests for d in listed.dialogs] == [3]

    _with_stub(settings, scenario)


def test_an_inverted_range_is_invalid_argument_not_an_empty_answer(settings):
    """since after to (swapped dates) answered OK with nothing in it, and Ingest stored nothing, while
    CreateBundle refused the same range as unusable input."""
    inverted = {"since": "2025-09-11", "to": "2025-09-10"}
    calls = [
        ("SearchRequests", logs_pb2.SearchRequestsRequest(q="timeout", filter=logs_pb2.LogFilter(**inverted))),
        ("ListDialogs", logs_pb2.ListDialogsRequest(filter=logs_pb2.LogFilter(**inverted))),
        ("Stats", logs_pb2.StatsRequest(**inverted)),
        ("Ingest", logs_pb2.IngestRequest(**inverted)),
        ("BuildIndex", logs_pb2.BuildIndexRequest(**inverted)),
    ]

    async def scenario(stub):
        for method, request in calls:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await getattr(stub, method)(request)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert bad.value.details() == "since 2025-09-11 is after to 2025-09-10: swap them", method
        one_day = await stub.Ingest(logs_pb2.IngestRequest(since="2025-09-10", to="2025-09-10"))
        assert one_day.rows_inserted == 3

    _with_stub(settings, scenario)


def test_rest_routes_translate_to_the_log_service(settings):
    async def scenario():
        server, target = await _serve(settings)
        channel = grpc.aio.insecure_channel(target)
        seen_auth = []
        app = web.Application(middlewares=[errors_middleware])  # it gives each request its id
        add_log_routes(app, lambda: _RecordingStub(logs_pb2_grpc.LogServiceStub(channel), seen_auth))
        runner, base = await _start_rest(app)
        try:
            await logs_pb2_grpc.LogServiceStub(channel).Ingest(logs_pb2.IngestRequest())
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer admin-key", "X-Request-ID": "rest-1"}) as http:
                async with http.get(f"{base}/v1/logs/requests", params={"q": "welcome", "limit": "5"}) as resp:
                    body = await resp.json()
                    assert resp.status == 200 and len(body["results"]) == 1
                    hit = body["results"][0]
                    assert isinstance(hit["ts_unix"], int) and hit["snippet"]
                async with http.get(f"{base}/v1/logs/requests/{hit['request_id']}") as resp:
                    detail = await resp.json()
                    assert detail["request"]["messages"][-1]["content"] == "thanks"
                    assert detail["response"]["choices"][0]["message"]["content"] == "welcome"
                async with http.get(f"{base}/v1/logs/dialogs") as resp:
                    dialog_id = (await resp.json())["dialogs"][0]["dialog_id"]
                async with http.get(f"{base}/v1/logs/dialogs/{dialog_id}") as resp:
                    assert len((await resp.json())["turns"]) == 3
                async with http.get(f"{base}/v1/logs/stats") as resp:
                    assert (await resp.json())["requests"] == 3
                async with http.get(f"{base}/v1/logs/requests", params={"q": '"unterminated'}) as resp:
                    error = (await resp.json())["error"]
                    assert resp.status == 400 and error["code"] == "invalid_query" and error["param"] == "q"
                async with http.get(f"{base}/v1/logs/requests/nope") as resp:
                    assert resp.status == 404 and (await resp.json())["error"]["message"]
                for route, params in (("requests", {"limit": "many"}), ("requests", {"limit": "99999999999"}),
                                      ("requests", {"status_code": "99999999999"}), ("dialogs", {"limit": "-1"}),
                                      ("requests", {"since": "20261126"}), ("stats", {"since": "2026-W48"}),
                                      ("dialogs", {"to": "2026-W48-1"}),
                                      ("requests", {"status": "500"}), ("stats", {"limit": "5"})):  # misspelt, unknown
                    async with http.get(f"{base}/v1/logs/{route}", params=params) as resp:
                        error = (await resp.json())["error"]
                        assert resp.status == 400 and error["param"] == next(iter(params)), (params, error)
                        if "limit" in params and route != "stats":  # was "use 0 to 2147483647" for -1
                            assert "use 1 to 500" in error["message"], error
            # The chat routes' metadata: the client's request id reaches the interceptor's logs too.
            expected = (("x-request-id", "rest-1"), ("x-aiproxy-transport", "http"), ("authorization", "Bearer admin-key"))
            assert seen_auth and all(md == expected for md in seen_auth)
        finally:
            await runner.cleanup()
            await channel.close()
            await server.stop(None)

    asyncio.run(scenario())


class _RecordingStub:
    """The real stub, noting the metadata each call carries."""

    def __init__(self, stub, seen):
        self._stub, self._seen = stub, seen

    def __getattr__(self, name):
        method = getattr(self._stub, name)

        def call(request, metadata=()):
            self._seen.append(tuple(metadata))
            return method(request, metadata=metadata)

        return call


PASTE = 150_000  # each turn pastes this much text, and resends the earlier pastes


@pytest.fixture
def big_settings(tmp_path):
    """A six-turn dialog of ~3 MB in all (turn n ~n×150 KB), a gateway that sends at most ~1 MiB
    per message (MAX_BODY_BYTES 1 KiB + 1 MiB), and one ~1.5 MB record no message can hold."""
    turns = [(f"turn {n} please review\n" + chr(ord("a") + n) * PASTE, f"ok {n}") for n in range(6)]
    records = conversation(turns, start=T0, gap_s=60)
    huge = conversation([("huge " + "z" * 1_500_000, "fine")], start=T0.replace(hour=11), key="key-huge")
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", records + huge)
    settings = Settings(log_dir=str(tmp_path / "logs"), max_body_bytes=1024,
                        logdb={"dir": str(tmp_path / "logs" / "db"), "server_id": "srv-1"})
    return settings, [r["request_id"] for r in records], huge[0]["request_id"]


async def _serve_limited(settings):
    """As the gateway's server (rpc/server.py): replies beyond MAX_BODY_BYTES + 1 MiB fail to send."""
    limit = settings.grpc_message_bytes
    server = grpc.aio.server(options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)])
    add_log_service(server, settings)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}", limit


def test_get_dialog_pages_stay_within_the_message_limit(big_settings):
    settings, turn_ids, huge_id = big_settings

    async def scenario():
        server, target, limit = await _serve_limited(settings)
        try:
            async with grpc.aio.insecure_channel(target) as channel:  # gRPC's default 4 MiB receive limit
                stub = logs_pb2_grpc.LogServiceStub(channel)
                await stub.Ingest(logs_pb2.IngestRequest())
                dialog_id = (await stub.GetRequest(logs_pb2.GetRequestRequest(request_id=turn_ids[0]))).summary.dialog_id
                for page_size, expected in ((0, [3, 1, 1, 1]), (2, [2, 1, 1, 1, 1]), (4, [3, 1, 1, 1])):
                    pages, cursor = [], ""
                    while True:
                        page = await stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id=dialog_id, limit=page_size, cursor=cursor))
                        assert page.ByteSize() <= limit and page.summary.requests == 6
                        pages.append([t.summary.request_id for t in page.turns])
                        if not (cursor := page.next_cursor):
                            break
                    assert [len(p) for p in pages] == expected and sum(pages, []) == turn_ids, page_size

                with pytest.raises(grpc.aio.AioRpcError) as too_large:
                    await stub.GetRequest(logs_pb2.GetRequestRequest(request_id=huge_id))
                assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                detail = common_pb2.ErrorDetail.FromString(dict(too_large.value.trailing_metadata())[ERROR_TRAILER])
                assert detail.http_status == 500 and detail.code == "response_too_large" and "logdb show" in detail.message
                huge = (await stub.SearchRequests(logs_pb2.SearchRequestsRequest(q="huge"))).results[0]
                with pytest.raises(grpc.aio.AioRpcError) as too_large:
                    await stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id=huge.dialog_id))
                assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and huge_id in too_large.value.details()
                with pytest.raises(grpc.aio.AioRpcError) as bad_cursor:
                    await stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id=dialog_id, cursor="bm9wZQ"))
                assert bad_cursor.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_rest_returns_a_dialog_larger_than_one_message_whole(big_settings):
    settings, turn_ids, huge_id = big_settings

    async def scenario():
        server, target, limit = await _serve_limited(settings)
        channel = grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", limit)])  # as cell.py
        narrow = grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 500_000)])
        stubs = iter([])
        app = web.Application(middlewares=[errors_middleware])
        add_log_routes(app, lambda: next(stubs, None) or logs_pb2_grpc.LogServiceStub(channel))
        runner, base = await _start_rest(app)
        try:
            await logs_pb2_grpc.LogServiceStub(channel).Ingest(logs_pb2.IngestRequest())
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer admin-key"}) as http:
                async with http.get(f"{base}/v1/logs/requests/{turn_ids[0]}") as resp:
                    dialog_id = (await resp.json())["summary"]["dialog_id"]
                async with http.get(f"{base}/v1/logs/dialogs/{dialog_id}") as resp:  # 3 MB: four pages, one answer
                    body = await resp.json()
                    assert resp.status == 200 and [t["summary"]["request_id"] for t in body["turns"]] == turn_ids
                    assert body["next_cursor"] == "" and body["summary"]["requests"] == 6
                async with http.get(f"{base}/v1/logs/dialogs/{dialog_id}", params={"limit": "2"}) as resp:
                    body = await resp.json()
                    assert len(body["turns"]) == 2 and body["next_cursor"]
                async with http.get(f"{base}/v1/logs/dialogs/{dialog_id}", params={"cursor": body["next_cursor"]}) as resp:
                    assert [t["summary"]["request_id"] for t in (await resp.json())["turns"]] == turn_ids[2:3]
                async with http.get(f"{base}/v1/logs/dialogs/{dialog_id}", params={"page": "2"}) as resp:
                    assert resp.status == 400 and (await resp.json())["error"]["param"] == "page"
                async with http.get(f"{base}/v1/logs/requests/{huge_id}") as resp:
                    error = (await resp.json())["error"]
                    assert resp.status == 500 and error["code"] == "response_too_large" and "logdb show" in error["message"]
                stubs = iter([logs_pb2_grpc.LogServiceStub(narrow)])  # a facade whose channel takes less than a page
                async with http.get(f"{base}/v1/logs/dialogs/{dialog_id}") as resp:
                    error = (await resp.json())["error"]
                    assert resp.status == 500 and error["code"] == "response_too_large" and "limit, cursor" in error["message"]
        finally:
            await runner.cleanup()
            await channel.close()
            await narrow.close()
            await server.stop(None)

    asyncio.run(scenario())


def test_rest_reads_a_request_whose_client_chosen_id_holds_a_slash(tmp_path):
    records = conversation([("hello", "hi")], start=T0, request_id="team/a b")
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", records)
    settings = Settings(log_dir=str(tmp_path / "logs"), logdb={"dir": str(tmp_path / "logs" / "db"), "server_id": "srv-1"})

    async def scenario():
        server, target = await _serve(settings)
        channel = grpc.aio.insecure_channel(target)
        app = web.Application(middlewares=[errors_middleware])
        add_log_routes(app, lambda: logs_pb2_grpc.LogServiceStub(channel))
        runner, base = await _start_rest(app)
        try:
            await logs_pb2_grpc.LogServiceStub(channel).Ingest(logs_pb2.IngestRequest())
            async with aiohttp.ClientSession() as http:
                for path in ("team/a%20b", "team%2Fa%20b"):
                    async with http.get(yarl.URL(f"{base}/v1/logs/requests/{path}", encoded=True)) as resp:
                        assert resp.status == 200, (path, await resp.text())
                        assert (await resp.json())["summary"]["request_id"] == "team/a b"
        finally:
            await runner.cleanup()
            await channel.close()
            await server.stop(None)

    asyncio.run(scenario())


def test_a_stored_value_beyond_its_proto_field_does_not_fail_the_reads(settings, tmp_path):
    """A store written before ingest checked statuses may hold 2**40: every read including that row
    was INTERNAL ("Value out of range"); the field is now left unset (0) and the rest is served."""
    async def scenario(stub):
        await stub.Ingest(logs_pb2.IngestRequest())
        (partition,) = (tmp_path / "logs" / "db").rglob("ai_proxy_*.sqlite3")
        with sqlite3.connect(partition) as conn:
            conn.execute("UPDATE requests SET status_code = ?, prompt_tokens = ?", (2**40, 2**62))
        found = await stub.SearchRequests(logs_pb2.SearchRequestsRequest(q="timeout"))
        listed = await stub.SearchRequests(logs_pb2.SearchRequestsRequest())
        assert len(found.results) == len(listed.results) == 3
        assert {r.status_code for r in listed.results} == {0} and listed.results[0].prompt_tokens == 2**62
        record = await stub.GetRequest(logs_pb2.GetRequestRequest(request_id=found.results[0].request_id))
        assert record.summary.status_code == 0
        dialog = await stub.GetDialog(logs_pb2.GetDialogRequest(dialog_id=record.summary.dialog_id))
        assert len(dialog.turns) == 3

    _with_stub(settings, scenario)


def test_a_search_over_partitions_without_an_index_says_so(tmp_path):
    """With LOGDB_FTS_ENABLED=false (the seed's default) or after `fts drop`, SearchRequests (and REST)
    answered OK with no results and no word why: only the logdb CLI checked for missing indexes."""
    turns = [("explain the database timeout", "raise it")]
    write_jsonl(tmp_path / "logs" / "requests" / "requests-20250910-1.jsonl", conversation(turns, start=T0))
    settings = Settings(log_dir=str(tmp_path / "logs"),
                        logdb={"dir": str(tmp_path / "logs" / "db"), "server_id": "srv-1", "fts_enabled": False})

    async def scenario(stub):
        assert (await stub.Ingest(logs_pb2.IngestRequest())).rows_inserted == 1
        found = await stub.SearchRequests(logs_pb2.SearchRequestsRequest(q="timeout"))
        assert not found.results and len(found.warnings) == 1
        assert "1 of 1 partitions in range have no full-text index" in found.warnings[0]
        assert "logdb fts build" in found.warnings[0]
        listed = await stub.SearchRequests(logs_pb2.SearchRequestsRequest())  # no query: no index needed
        assert len(listed.results) == 1 and not listed.warnings
        await stub.BuildIndex(logs_pb2.BuildIndexRequest())
        found = await stub.SearchRequests(logs_pb2.SearchRequestsRequest(q="timeout"))
        assert len(found.results) == 1 and not found.warnings

    _with_stub(settings, scenario)
