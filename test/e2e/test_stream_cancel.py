"""A gRPC client that cancels a stream it has started reading: the upstream call must stop at once
and the record keep what was streamed (the relay used to be left suspended until garbage collection)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import httpx
import orjson
import pytest

from aiproxy.testing.fake_openai import (
    EndlessStreamReply,
    HangReply,
    JSONReply,
    StreamReply,
    completion,
    text_chunks,
)
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.streams import unread_stream
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

CANCEL_BOUND = 0.1  # seconds from the client giving up to the upstream call being cancelled


@pytest.mark.parametrize("method", ["StreamChatCompletion", "StreamChatCompletionBatches"])
@pytest.mark.parametrize("round_", range(3))  # the leak depended on where the cancel landed: try it more than once
def test_grpc_stream_cancel_after_reading_stops_the_upstream(gateway, fake, method, round_):
    fake.push(StreamReply(text_chunks(["first"], usage=False)[:2], done=False, hang_after=True))
    request_id = f"cancel-{method}-{round_}"
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="hi")
        call = getattr(chat_pb2_grpc.ChatServiceStub(channel), method)(
            request, metadata=(("authorization", f"Bearer {CLIENT_KEY}"), ("x-request-id", request_id)))
        next(call)  # the first message has arrived: the relay is now suspended in the servicer
        call.cancel()
        gave_up = time.monotonic()
        assert fake.wait_cancelled().cancelled_at - gave_up < CANCEL_BOUND
    record = gateway.wait_for_record(request_id)
    assert record["status_code"] == 499
    assert record["response"]["choices"][0]["message"]["role"] == "assistant"  # the partial answer is kept


@pytest.mark.parametrize("method", ["CreateChatCompletion", "StreamChatCompletion"])
def test_a_client_deadline_ends_the_upstream_call_and_is_logged_as_such(gateway, fake, method):
    """A deadline shorter than the upstream's answer: the client gets DEADLINE_EXCEEDED, the upstream
    call ends with it, and the record says the deadline passed (it said "client cancelled", 499)."""
    if method == "CreateChatCompletion":
        fake.push(HangReply(10))
    else:
        fake.push(StreamReply(text_chunks(["first"], usage=False)[:2], done=False, hang_after=True))
    request_id = f"deadline-{method}"
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="hi")
        call = getattr(chat_pb2_grpc.ChatServiceStub(channel), method)
        with pytest.raises(grpc.RpcError) as err:
            answer = call(request, timeout=0.5,
                          metadata=(("authorization", f"Bearer {CLIENT_KEY}"), ("x-request-id", request_id)))
            list(answer) if method != "CreateChatCompletion" else None
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        fake.wait_cancelled()
    record = gateway.wait_for_record(request_id)
    assert (record["status_code"], record["error"]["code"]) == (504, "client_deadline_exceeded")
    assert "deadline" in record["error"]["message"]


@pytest.fixture()
def impatient_gateway(upstream, tmp_path):
    """REQUEST_BODY_TIMEOUT_SECONDS=1: a client that reads nothing of its stream is dropped after 1 s."""
    env = {"REQUEST_BODY_TIMEOUT_SECONDS": "1", "MAX_BODY_BYTES": str(512 * 1024 * 1024)}  # no answer limit in the way
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url, env=env) as gw:
        yield gw
    errors = [line for line in gw.stderr_path.read_bytes().splitlines() if b'"level":"ERROR"' in line]
    assert errors == []  # ending such a call is no failure of the gateway


def _closed_by_the_gateway(gateway_port: int, client_port: int, within: float) -> bool:
    """Whether the gateway's end of a connection leaves ESTABLISHED within `within` seconds, read
    from /proc/net/tcp: reading from the client would let a stalled stream go on, and the client's
    end stays ESTABLISHED while the gateway's unsent bytes wait for it (FIN_WAIT1 on the other end)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if int(local.rsplit(":", 1)[1], 16) == gateway_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                if state != "01":  # 01: ESTABLISHED
                    return True
                break
        else:  # gone
            return True
        time.sleep(0.05)
    return False


def test_a_rest_client_that_reads_nothing_is_dropped_and_its_upstream_call_ends(impatient_gateway, fake):
    """Was: the stream, its upstream connection and the answer kept for the request log were held
    for as long as the client kept the connection open without reading."""
    fake.push(EndlessStreamReply())
    with unread_stream(impatient_gateway, "never-reads") as client:
        assert fake.wait_cancelled(timeout=15).cancelled_at  # never read a byte: every buffer on the way filled up
        record = impatient_gateway.wait_for_record("never-reads")
        assert (record["status_code"], record["error"]["code"]) == (408, "client_read_timeout")
        # and then its connection, though the client still has not read a byte
        assert _closed_by_the_gateway(impatient_gateway.port, client.getsockname()[1], within=10)


def test_a_rest_client_that_reads_none_of_a_large_json_answer_is_dropped(impatient_gateway, fake):
    """Was: aiohttp's write of a JSON answer waited for the client with no time limit, holding the
    answer (up to MAX_BODY_BYTES + 1 MiB) and the connection for as long as the client kept it open;
    a stream's connection was closed after twice REQUEST_BODY_TIMEOUT_SECONDS."""
    fake.push(JSONReply(completion(content="y" * (8 * 1024 * 1024))))
    with unread_stream(impatient_gateway, "never-reads-json", stream=False) as client:
        assert impatient_gateway.wait_for_record("never-reads-json", timeout=10)["status_code"] == 200
        assert _closed_by_the_gateway(impatient_gateway.port, client.getsockname()[1], within=10)


def test_a_rest_client_reading_a_large_json_answer_slowly_gets_all_of_it(impatient_gateway, fake):
    """Reading steadily, if for longer than the limit above in all, is no stall (nginx's send_timeout)."""
    content = "y" * (2 * 1024 * 1024)
    fake.push(JSONReply(completion(content=content)))
    with unread_stream(impatient_gateway, "reads-slowly-json", stream=False) as client:
        client.settimeout(10)
        data, started = b"", time.monotonic()
        while not data.endswith(b"}}") and (piece := client.recv(65536)):
            data += piece
            time.sleep(0.01)  # at most ~800 KiB/s through the small receive buffer
        took = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    assert took > 2  # longer than the bound on a client that reads nothing
    assert b"content-length: %d" % len(body) in head.lower()
    assert orjson.loads(body)["choices"][0]["message"]["content"] == content


def test_a_grpc_client_that_reads_nothing_gets_its_call_ended(impatient_gateway, fake):
    fake.push(EndlessStreamReply())
    with grpc.insecure_channel(impatient_gateway.grpc_target) as channel:
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="hi")
        call = chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(
            request, metadata=(("authorization", f"Bearer {CLIENT_KEY}"), ("x-request-id", "grpc-never-reads")))
        assert fake.wait_cancelled(timeout=15).cancelled_at  # the call is never read from
        record = impatient_gateway.wait_for_record("grpc-never-reads")
        call.cancel()
    assert (record["status_code"], record["error"]["code"]) == (408, "client_read_timeout")


def test_a_grpc_client_that_reads_nothing_on_a_busy_connection_gets_its_call_ended(impatient_gateway, fake):
    """A channel multiplexes its calls on one connection. The ended call's status waits behind the
    messages its client has not read, and the call used to wait for it: only the connection going idle
    (REQUEST_BODY_TIMEOUT_SECONDS after its last call) ended it, so while the client's other calls went
    on, the call, the answer kept for its record and its place in the drain were held for good."""
    fake.push(EndlessStreamReply())
    auth = ("authorization", f"Bearer {CLIENT_KEY}")
    with grpc.insecure_channel(impatient_gateway.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        slow = chat_pb2.ChatCompletionRequest(model="mock")
        slow.messages.add(role="user", content_text="[mock:delay_ms=20000] keeps the connection busy")
        busy = stub.CreateChatCompletion.future(slow, metadata=(auth,))
        request = chat_pb2.ChatCompletionRequest(model="gpt-test")
        request.messages.add(role="user", content_text="hi")
        call = stub.StreamChatCompletion(request, timeout=20, metadata=(auth, ("x-request-id", "grpc-never-reads-busy")))
        record = impatient_gateway.wait_for_record("grpc-never-reads-busy", timeout=10)
        assert not busy.done()
        with pytest.raises(grpc.RpcError) as err:  # a client reading on gets what it left, then the status
            for _ in call:
                pass
        busy.cancel()
    assert (record["status_code"], record["error"]["code"]) == (408, "client_read_timeout")
    assert record["latency_ms"] < 5000
    assert "REQUEST_BODY_TIMEOUT_SECONDS" in err.value.details()  # the gateway's status, not the client's deadline


@pytest.fixture()
def own_gateway(upstream, tmp_path):
    """A gateway of the test's own, whose app log holds nothing but this test's calls."""
    with GatewayProcess(tmp_path, upstream_url=upstream.base_url) as gw:
        yield gw


def test_a_rest_client_leaving_mid_stream_is_no_error_of_the_gateway(own_gateway, fake):
    """A client closing its connection while events keep coming is routine (a user pressing stop).
    Was: the write that found the connection closing raised ClientConnectionResetError out of the
    handler, logged as "unhandled error in HTTP handler" with a traceback, at ERROR, for many
    of such clients; the call must end as any cancelled call does (499, upstream call closed)."""
    rounds = 30  # the write lost the race to the cancellation about one time in six
    for round_ in range(rounds):
        fake.push(StreamReply(text_chunks(["x"] * 400), per_event=True, delay=0.002))
        headers = {"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": f"leaves-{round_}"}
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", f"{own_gateway.base_url}/chat/completions", headers=headers, json=body,
                          timeout=10) as response:
            next(response.iter_lines())
        fake.wait_cancelled()
        fake.reset()
    for round_ in range(rounds):
        assert own_gateway.wait_for_record(f"leaves-{round_}")["status_code"] == 499
    errors = [line for line in own_gateway.stderr_path.read_bytes().splitlines() if b'"level":"ERROR"' in line]
    assert errors == []
