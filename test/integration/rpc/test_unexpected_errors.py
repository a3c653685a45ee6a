"""A servicer bug reaches neither gRPC nor REST clients: they get a generic INTERNAL / 500, the
app log gets the traceback with the request id."""

from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from loguru import logger

from aiproxy.auth import KeyRing
from aiproxy.httpapi.app import errors_middleware
from aiproxy.httpapi.errors import rpc_error_parts
from aiproxy.httpapi.logs_routes import add_log_routes
from aiproxy.logsetup import _app_json
from aiproxy.rpc.interceptor import AuthInterceptor
from aiproxy.rpc.status import ERROR_TRAILER
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc, common_pb2, logs_pb2_grpc

KEY = "sk-unit-key"
METADATA = (("authorization", f"Bearer {KEY}"), ("x-request-id", "bug-1"))


class BuggyLogs(logs_pb2_grpc.LogServiceServicer):
    async def Stats(self, request, context):
        raise RuntimeError("stats exploded")


class BuggyChat(chat_pb2_grpc.ChatServiceServicer):
    async def CreateChatCompletion(self, request, context):
        return request.n[0]  # TypeError: 'int' object is not subscriptable

    async def StreamChatCompletion(self, request, context):
        yield chat_pb2.ChatCompletionChunk(id="first")
        raise KeyError("secret internals")


@pytest.fixture
def app_log():
    lines: list[str] = []
    sink = logger.add(lines.append, format=_app_json, level="ERROR")
    yield lines
    logger.remove(sink)


def test_servicer_bugs_become_generic_internal_errors(app_log):
    async def scenario():
        server = grpc.aio.server(interceptors=[AuthInterceptor(KeyRing((KEY,), ()), False)])
        chat_pb2_grpc.add_ChatServiceServicer_to_server(BuggyChat(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = chat_pb2_grpc.ChatServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as unary:
                    await stub.CreateChatCompletion(chat_pb2.ChatCompletionRequest(), metadata=METADATA)
                call = stub.StreamChatCompletion(chat_pb2.ChatCompletionRequest(), metadata=METADATA)
                assert (await call.read()).id == "first"
                with pytest.raises(grpc.aio.AioRpcError) as streamed:
                    await call.read()
                return unary.value, streamed.value
        finally:
            await server.stop(None)

    for err in asyncio.run(scenario()):
        assert err.code() == grpc.StatusCode.INTERNAL
        assert err.details() == "The gateway hit an internal error."
        detail = common_pb2.ErrorDetail.FromString(dict(err.trailing_metadata())[ERROR_TRAILER])
        assert (detail.http_status, detail.type) == (500, "server_error")
        status, body, _ = rpc_error_parts(err)
        assert status == 500 and body["error"]["message"] == "The gateway hit an internal error."
    entries = [orjson.loads(str(line)) for line in app_log]
    assert [e["request_id"] for e in entries] == ["bug-1", "bug-1"]
    assert "not subscriptable" in entries[0]["traceback"] and "request.n[0]" in entries[0]["traceback"]
    assert "secret internals" in entries[1]["exception"]


def test_log_routes_carry_the_clients_request_id(app_log):
    """GET /v1/logs/* sends the same metadata as the chat routes: the interceptor's log line for a
    LogService bug has the id the client sent as X-Request-ID."""

    async def scenario():
        server = grpc.aio.server(interceptors=[AuthInterceptor(KeyRing((), (KEY,)), False)])
        logs_pb2_grpc.add_LogServiceServicer_to_server(BuggyLogs(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                app = web.Application(middlewares=[errors_middleware])
                add_log_routes(app, lambda: logs_pb2_grpc.LogServiceStub(channel))
                async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                    response = await client.get("/v1/logs/stats", headers=dict(METADATA[:1], **{"X-Request-ID": "logs-1"}))
                    return response.status, await response.json()
        finally:
            await server.stop(None)

    status, body = asyncio.run(scenario())
    assert status == 500 and body["error"]["message"] == "The gateway hit an internal error."
    entries = [orjson.loads(str(line)) for line in app_log]
    assert [(e["msg"], e["request_id"]) for e in entries] == [("unhandled error in RPC", "logs-1")]


# A status without an ErrorDetail never came from a servicer's GatewayError: only a broken hop to
# the backend keeps grpc-gateway's status; everything else (a size limit's RESOURCE_EXHAUSTED
# included, which the table would make a retryable 429) is the gateway's own 500.
NO_DETAIL_STATUSES = [
    (grpc.StatusCode.UNKNOWN, 500, "server_error", "The gateway hit an internal error."),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 500, "server_error", "The gateway hit an internal error."),
    (grpc.StatusCode.INVALID_ARGUMENT, 500, "server_error", "The gateway hit an internal error."),
    (grpc.StatusCode.UNAUTHENTICATED, 500, "server_error", "The gateway hit an internal error."),
    (grpc.StatusCode.CANCELLED, 500, "server_error", "The gateway hit an internal error."),
    (grpc.StatusCode.UNIMPLEMENTED, 500, "server_error", "The gateway hit an internal error."),
    (grpc.StatusCode.UNAVAILABLE, 503, "server_error", "The gateway's backend is unavailable; retry shortly."),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "server_error", "The gateway's backend did not answer in time."),
]


@pytest.mark.parametrize("code, status, error_type, message", NO_DETAIL_STATUSES,
                         ids=[c.name for c, *_ in NO_DETAIL_STATUSES])
def test_statuses_without_detail_do_not_leak_their_details(code, status, error_type, message):
    err = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(),
                               details="Unexpected <class 'TypeError'>: 'int' object is not subscriptable")
    got_status, body, headers = rpc_error_parts(err)
    assert (got_status, body["error"]["type"], body["error"]["message"]) == (status, error_type, message)
    assert headers == {}
