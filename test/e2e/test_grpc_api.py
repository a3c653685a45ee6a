"""A gRPC client with the generated stubs: the same calls, errors and logs as over REST."""

from __future__ import annotations

import grpc
import httpx
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aiproxy.cell import internal_socket_path
from aiproxy.testing.fake_openai import JSONReply, SSEComment, StreamReply, completion, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc, common_pb2, hop_pb2, hop_pb2_grpc

AUTH = (("authorization", f"Bearer {CLIENT_KEY}"),)


@pytest.fixture()
def channel(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as ch:
        yield ch


@pytest.fixture()
def stub(channel):
    return chat_pb2_grpc.ChatServiceStub(channel)


def _request(**fields) -> chat_pb2.ChatCompletionRequest:
    request = chat_pb2.ChatCompletionRequest(model=fields.pop("model", "gpt-test"), **fields)
    if not request.messages:
        request.messages.add(role="user", content_text="hello over gRPC")
    return request


def error_detail(err: grpc.RpcError) -> common_pb2.ErrorDetail:
    for key, value in err.trailing_metadata():
        if key == "aiproxy-error-bin":
            return common_pb2.ErrorDetail.FromString(value)
    raise AssertionError("no aiproxy-error-bin trailer")


def test_unary_typed_request_and_response(stub, fake, gateway):
    request = _request(temperature=0.2, max_tokens=30)
    request.messages.add(role="assistant", content_null=0).tool_calls.add(
        id="call_1", type="function", function=chat_pb2.FunctionCall(name="f", arguments="{}"))
    request.messages.add(role="tool", tool_call_id="call_1", content_text="42")
    request.tools.add(type="function", function=chat_pb2.FunctionDefinition(
        name="f", parameters_json='{"type":"object"}'))
    request.stop_list.items.extend(["A", "B"])
    response, call = stub.CreateChatCompletion.with_call(request, metadata=(*AUTH, ("x-request-id", "grpc-1")))
    assert response.choices[0].message.content_text == "Hello!"
    assert response.usage.total_tokens == 7
    assert dict(call.initial_metadata())["x-request-id"] == "grpc-1"
    assert fake.received[0].json == {
        "model": "openai/gpt-4o",
        "messages": [
            {"role": "user", "content": "hello over gRPC"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "temperature": 0.2,
        "max_tokens": 30,
        "stop": ["A", "B"],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    record = gateway.wait_for_record("grpc-1")
    assert record["transport"] == "grpc" and record["status_code"] == 200


def test_streaming_with_usage(stub, fake):
    fake.push(StreamReply(text_chunks(["a", "b", "c"])))
    request = _request(stream=True, stream_options=chat_pb2.StreamOptions(include_usage=True))
    chunks = list(stub.StreamChatCompletion(request, metadata=AUTH))
    text = "".join(c.choices[0].delta.content_text for c in chunks if c.choices)
    assert text == "abc"
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == 3
    assert fake.received[0].json["stream"] is True


def test_batched_stream_is_the_same_stream_in_fewer_messages(stub, fake, gateway):
    request = _request(stream=True, stream_options=chat_pb2.StreamOptions(include_usage=True))
    fake.push(StreamReply(text_chunks(["a", "b", "c"])))
    single = list(stub.StreamChatCompletion(request, metadata=AUTH))
    fake.push(StreamReply(text_chunks(["a", "b", "c"])))  # one write: the chunks arrive together
    batches = list(stub.StreamChatCompletionBatches(request, metadata=(*AUTH, ("x-request-id", "grpc-batch-1"))))
    flat = [chunk for batch in batches for chunk in batch.chunks]
    assert flat == single and len(batches) < len(flat)
    assert len(batches[0].chunks) == 1  # the first chunk goes alone (time to first token)
    assert gateway.wait_for_record("grpc-batch-1")["response"]["choices"][0]["message"]["content"] == "abc"

    # An upstream that pauses between events: each batch goes out when read, nothing waits for more.
    fake.push(StreamReply(text_chunks(["a", "b", "c"]), per_event=True, delay=0.05))
    batches = list(stub.StreamChatCompletionBatches(request, metadata=AUTH))
    assert [len(batch.chunks) for batch in batches] == [1] * len(single)


def test_upstream_keepalive_comments_travel_in_batches_only(stub, fake):
    """The facade forwards OpenRouter's `: OPENROUTER PROCESSING` (StreamChatCompletionBatches carries
    it); a gRPC client's StreamChatCompletion is chunks only."""
    events = [SSEComment("OPENROUTER PROCESSING"), *text_chunks(["a", "b"], usage=False)]
    request = _request(stream=True)
    fake.push(StreamReply(events, per_event=True, delay=0.05))
    batches = list(stub.StreamChatCompletionBatches(request, metadata=AUTH))
    assert list(batches[0].comments) == ["OPENROUTER PROCESSING"] and not batches[0].chunks
    assert not any(batch.comments for batch in batches[1:])
    fake.push(StreamReply(events, per_event=True, delay=0.05))
    chunks = list(stub.StreamChatCompletion(request, metadata=AUTH))
    assert [chunk for batch in batches for chunk in batch.chunks] == chunks
    assert "".join(c.choices[0].delta.content_text for c in chunks) == "ab"


def test_list_models_is_public(stub):
    models = stub.ListModels(chat_pb2.ListModelsRequest())
    assert {m.id for m in models.data} >= {"gpt-test", "mock"}
    assert stub.GetModel(chat_pb2.GetModelRequest(id="mock")).owned_by == "mock"


def test_model_and_log_service_answers_carry_the_request_id(stub, channel):
    """As every REST response and every chat call does: the client's id, or a new one."""
    from aiproxy.testing.gateway import ADMIN_KEY
    from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

    _, call = stub.ListModels.with_call(chat_pb2.ListModelsRequest(), metadata=(("x-request-id", "models-1"),))
    assert dict(call.trailing_metadata())["x-request-id"] == "models-1"
    logs = logs_pb2_grpc.LogServiceStub(channel)
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    _, call = logs.Stats.with_call(logs_pb2.StatsRequest(), metadata=(*admin, ("x-request-id", "stats-1")))
    assert dict(call.trailing_metadata())["x-request-id"] == "stats-1"
    _, call = logs.Stats.with_call(logs_pb2.StatsRequest(), metadata=admin)
    assert dict(call.trailing_metadata())["x-request-id"]


def test_unauthenticated(stub, gateway):
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(_request(), metadata=(("authorization", "Bearer nope"), ("x-request-id", "no-key")))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_detail(err.value).http_status == 401
    record = gateway.wait_for_record("no-key")  # the refusal, without the body of a client that has no key
    assert record["status_code"] == 401 and record["request"] is None and record["model_original"] is None


def test_unknown_model_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(_request(model="unknown-thing"), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_detail(err.value).code == "model_not_found"


def test_invalid_argument_names_param(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(chat_pb2.ChatCompletionRequest(model="gpt-test"), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_detail(err.value).param == "messages"


def test_rate_limit_is_resource_exhausted_with_retry_hint(stub, fake):
    fake.push(JSONReply({"error": {"code": 429, "message": "slow down"}}, status=429, headers={"Retry-After": "5"}))
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(_request(), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata())["retry-after"] == "5"
    assert error_detail(err.value).http_status == 429


def test_mid_stream_failure_aborts_the_stream(stub, fake):
    events = text_chunks(["ok"], usage=False)[:2]
    events.append({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "error": {"code": 502, "message": "provider died"},
                   "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})
    fake.push(StreamReply(events))
    received = []
    with pytest.raises(grpc.RpcError) as err:
        for chunk in stub.StreamChatCompletion(_request(stream=True), metadata=AUTH):
            received.append(chunk)
    assert len(received) == 2
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_detail(err.value).message == "provider died"


def test_unary_rejects_stream_flag(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(_request(stream=True), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_rpc_streams_when_the_flag_is_unset_and_refuses_false(stub, fake):
    fake.push(StreamReply(text_chunks(["a", "b"])))
    chunks = list(stub.StreamChatCompletion(_request(), metadata=AUTH))
    assert "".join(c.choices[0].delta.content_text for c in chunks if c.choices) == "ab"
    assert fake.received[-1].json["stream"] is True
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamChatCompletion(_request(stream=False), metadata=AUTH))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'stream' is false: call CreateChatCompletion" in err.value.details()


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="aiproxy.v1.ChatService")).status == \
        health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in answer.list_services_response.service}
    assert {"aiproxy.v1.ChatService", "grpc.health.v1.Health"} <= names


def test_unary_and_stream_log_alike(stub, fake, gateway):
    fake.push(JSONReply(completion("logged")))
    stub.CreateChatCompletion(_request(), metadata=(*AUTH, ("x-request-id", "grpc-log-1")))
    list(stub.StreamChatCompletion(_request(stream=True), metadata=(*AUTH, ("x-request-id", "grpc-log-2"))))
    unary, streamed = gateway.wait_for_record("grpc-log-1"), gateway.wait_for_record("grpc-log-2")
    assert unary["response"]["choices"][0]["message"]["content"] == "logged"
    assert streamed["stream"] is True and streamed["ttft_ms"] is not None
    assert streamed["response"]["choices"][0]["message"]["content"] == "Hello from upstream"
    assert unary["api_key_hash"] == streamed["api_key_hash"] and unary["api_key_hash"].startswith("kh_")


@pytest.mark.parametrize("field", ["extra_json", "tools", "deep"])
def test_broken_json_fields_are_invalid_argument(stub, gateway, field):
    request = _request()
    if field == "extra_json":
        request.extra_json = "[1]"
    elif field == "deep":  # orjson parses it but cannot write it to the upstream
        request.extra_json = '{"x": ' + "[" * 500 + "]" * 500 + "}"
    else:
        request.tools.add(type="function", function=chat_pb2.FunctionDefinition(name="f", parameters_json="{bad"))
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(request, metadata=(*AUTH, ("x-request-id", f"broken-{field}")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert gateway.wait_for_record(f"broken-{field}")["status_code"] == 400


def test_huge_error_messages_keep_their_code(stub, fake):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModel(chat_pb2.GetModelRequest(id="x" * 100_000))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "does not exist" in err.value.details() and len(err.value.details()) < 1024
    fake.push(JSONReply({"error": {"message": "日本" * 20_000}}, status=400))
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(_request(), metadata=AUTH)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_detail(err.value).message.endswith("…[truncated]")


@pytest.mark.parametrize(("fields", "param"), [({"temperature": float("nan"), "top_p": float("inf")}, "temperature"),
                                              ({"presence_penalty": float("-inf")}, "presence_penalty")])
def test_nan_and_infinity_are_invalid_argument(stub, fake, gateway, fields, param):
    rid = f"nan-{param}"
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(_request(**fields), metadata=(*AUTH, ("x-request-id", rid)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_detail(err.value).param == param and param in err.value.details()
    assert not fake.received  # never sent upstream as null
    record = gateway.wait_for_record(rid)  # refused before the body could be read: still logged with its model
    assert (record["status_code"], record["model_original"]) == (400, "gpt-test")


@pytest.mark.parametrize("name", ["X-RateLimit-Reset-Bin", "X-RateLimit-Reset!", "X-RateLimit-Reset~Tokens"])
@pytest.mark.parametrize("status", [200, 429])
def test_rate_limit_header_names_metadata_cannot_carry_stay_behind(stub, fake, name, status):
    """An upstream header whose name is no valid metadata key (a `-bin` suffix wants bytes, `!` or `~`
    are HTTP token characters gRPC keys refuse) made an answer INTERNAL and an error hang the call."""
    headers = {name: "1", "X-RateLimit-Remaining": "7"}
    fake.push(JSONReply(completion("ok"), headers=headers) if status == 200
              else JSONReply({"error": {"message": "slow down"}}, status=429, headers=headers))
    if status == 200:
        answer, call = stub.CreateChatCompletion.with_call(_request(), metadata=AUTH, timeout=10)
        assert answer.choices[0].message.content_text == "ok"
        metadata = dict(call.initial_metadata())
    else:
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateChatCompletion(_request(), metadata=AUTH, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        metadata = dict(err.value.trailing_metadata())
    assert metadata["x-ratelimit-remaining"] == "7"
    assert name.lower() not in metadata


def test_a_public_client_cannot_pass_its_calls_off_as_the_rest_facades(stub, fake, gateway):
    """`x-aiproxy-transport: http` is the in-process facade's word; a client on the public port that
    sent it had its call logged as `transport: http` (and its metadata moved to the trailers)."""
    _, call = stub.CreateChatCompletion.with_call(
        _request(), metadata=(*AUTH, ("x-request-id", "grpc-spoof-1"), ("x-aiproxy-transport", "http")))
    assert dict(call.initial_metadata())["x-request-id"] == "grpc-spoof-1"
    assert gateway.wait_for_record("grpc-spoof-1")["transport"] == "grpc"
    rest = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
                      headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": "rest-not-spoofed-1"})
    assert rest.status_code == 200 and gateway.wait_for_record("rest-not-spoofed-1")["transport"] == "http"


def test_the_cells_own_hop_is_not_served_on_the_public_port(channel, fake, gateway):
    """CellHop carries the facade's calls on the cell's unix socket only: each carried call is checked
    as its own, but the public port has no business serving it (and reflection does not list it).
    The servers share their interceptors, whose handler cache served it on both once the facade had
    opened its stream."""
    rest = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert rest.status_code == 200
    exchange = hop_pb2_grpc.CellHopStub(channel).Exchange(iter([hop_pb2.HopCalls()]), metadata=AUTH)
    with pytest.raises(grpc.RpcError) as refused:
        list(exchange)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_internal_socket_does_not_serve_the_public_ports_reflection(channel, gateway):
    """The other way round: reflection is the public port's. Once a client had used it there, the
    interceptors' shared cache served it on the cell's internal socket too."""
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    with grpc.insecure_channel(f"unix:{internal_socket_path(gateway.proc.pid)}") as internal:
        asked = reflection_pb2_grpc.ServerReflectionStub(internal).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        with pytest.raises(grpc.RpcError) as refused:
            next(asked)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_errors_of_every_service_carry_the_request_id(stub, channel):
    """README: every error carries x-request-id in its trailers. LogService's errors (a bad cursor, a
    missing record, a bundle request without days) and GetModel's 404 aborted without it."""
    from aiproxy.testing.gateway import ADMIN_KEY
    from aiproxypb.v1 import logs_pb2, logs_pb2_grpc

    logs = logs_pb2_grpc.LogServiceStub(channel)
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    calls = {
        "search": lambda md: logs.SearchRequests(logs_pb2.SearchRequestsRequest(cursor="garbage"), metadata=md),
        "get": lambda md: logs.GetRequest(logs_pb2.GetRequestRequest(request_id="nope"), metadata=md),
        "bundle": lambda md: list(logs.CreateBundle(logs_pb2.CreateBundleRequest(), metadata=md)),
        "model": lambda md: stub.GetModel(chat_pb2.GetModelRequest(id="no-such-model"), metadata=md),
    }
    for name, call in calls.items():
        for given in (f"err-{name}", None):
            metadata = (*admin, ("x-request-id", given)) if given else admin
            with pytest.raises(grpc.RpcError) as err:
                call(metadata)
            trailers = dict(err.value.trailing_metadata())
            assert "aiproxy-error-bin" in trailers, name
            assert trailers.get("x-request-id"), name
            assert given is None or trailers["x-request-id"] == given, name


@pytest.mark.parametrize("field", ["extra_json", "message", "tools"])
def test_integers_beyond_64_bits_are_invalid_argument_as_over_rest(stub, fake, gateway, field):
    """JSON text from a gRPC client holding 123456789012345678901 reached the upstream as
    1.2345678901234568e+20 (orjson reads it as a float), where REST refuses it with a 400."""
    huge = "123456789012345678901"
    request = _request()
    if field == "extra_json":
        request.extra_json = '{"seed_big": ' + huge + "}"
    elif field == "message":
        request.messages[0].extra_json = '{"v": [-' + huge + "]}"
    else:
        request.tools.add(type="function", function=chat_pb2.FunctionDefinition(
            name="f", parameters_json='{"type": "integer", "maximum": ' + huge + "}"))
    rid = f"huge-int-{field}"
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(request, metadata=(*AUTH, ("x-request-id", rid)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert huge in err.value.details() and "64-bit" in err.value.details()
    assert not fake.received
    assert gateway.wait_for_record(rid)["status_code"] == 400
    request = _request(extra_json='{"seed": 18446744073709551615, "n": -9223372036854775808}')  # 64-bit: fine
    stub.CreateChatCompletion(request, metadata=AUTH)
    assert orjson.loads(fake.received[0].body)["seed"] == 2**64 - 1


def test_a_client_with_keepalive_on_keeps_a_call_that_waits_for_a_slow_model(gateway, fake):
    """Clients behind NATs and load balancers ping a quiet connection (grpc.keepalive_time_ms); gRPC's
    server default allows one ping in 5 minutes and answers more with GOAWAY too_many_pings, which
    ended a call still waiting for its upstream with UNAVAILABLE "Too many pings"."""
    options = [("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 5000),
               ("grpc.http2.max_pings_without_data", 0)]
    fake.push(JSONReply(completion("slow but sure")))
    fake.latency = 8.5  # four pings while nothing else moves on the connection
    try:
        with grpc.insecure_channel(gateway.grpc_target, options=options) as channel:
            answer = chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(_request(), metadata=AUTH, timeout=30)
    finally:
        fake.latency = 0.0
    assert answer.choices[0].message.content_text == "slow but sure"


@pytest.mark.parametrize(("place", "key"), [("request", "temperature"), ("message", "content")])
def test_a_key_both_typed_and_in_extra_json_is_invalid_argument(stub, fake, gateway, place, key):
    """A typed field and extra_json holding the same key contradict each other; the extra_json value
    silently replaced the typed one on its way upstream."""
    request = _request(temperature=0.3)
    if place == "request":
        request.extra_json = '{"temperature": 0.9}'
    else:
        request.messages[0].extra_json = '{"content": null}'
    rid = f"both-{place}"
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(request, metadata=(*AUTH, ("x-request-id", rid)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_detail(err.value).param == key and "extra_json" in err.value.details()
    assert not fake.received
    assert gateway.wait_for_record(rid)["status_code"] == 400


def test_a_request_message_that_does_not_parse_is_invalid_argument(channel, gateway):
    """Bytes that are no valid message (corrupt wire format, a string field with bad UTF-8, as a client
    built from a mismatched .proto sends) got grpc.aio's default: UNKNOWN quoting the DecodeError, an
    ERROR with a traceback in the app log, no ErrorDetail, no x-request-id and no request log record;
    then a record without the api_key_hash of the key that was checked."""
    from aiproxy.testing.gateway import ADMIN_KEY

    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    calls = {
        "chat": (channel.unary_unary("/aiproxy.v1.ChatService/CreateChatCompletion"), AUTH),
        "stream": (lambda raw, **kw: list(channel.unary_stream("/aiproxy.v1.ChatService/StreamChatCompletion")(
            raw, **kw)), AUTH),
        "model": (channel.unary_unary("/aiproxy.v1.ChatService/GetModel"), ()),
        "upload": (lambda raw, **kw: channel.stream_unary("/aiproxy.v1.LogService/ImportBundle")(iter([raw]), **kw),
                   admin),
    }
    for name, (call, auth) in calls.items():
        for raw in (b"\x0a\x02\xff\xfe", b"\xff\xff\xff\xff"):
            rid = f"undecodable-{name}-{raw[0]}"
            with pytest.raises(grpc.RpcError) as err:
                call(raw, metadata=(*auth, ("x-request-id", rid)), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "DecodeError" not in err.value.details()
            assert error_detail(err.value).http_status == 400
            assert dict(err.value.trailing_metadata())["x-request-id"] == rid
            if name in ("chat", "stream"):
                record = gateway.wait_for_record(rid)
                # The key was good: the refusal is the client's, as a REST 400 or 413 is (it had none).
                assert record["status_code"] == 400 and record["api_key_hash"].startswith("kh_")
    with pytest.raises(grpc.RpcError) as err:  # the key is checked first, as over REST
        calls["chat"][0](b"\xff\xff", metadata=(("authorization", "Bearer wrong"),), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert b"DecodeError" not in gateway.stderr_path.read_bytes()


def test_reflection_resolves_methods_as_grpcurl_describe_asks(channel):
    """The reflection spec's file_containing_symbol takes <package>.<service>[.<method>], and
    `grpcurl describe aiproxy.v1.ChatService.CreateChatCompletion` asks so: it was NOT_FOUND (the
    descriptor pool knows no method symbols)."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    database = ProtoReflectionDescriptorDatabase(channel)
    assert database.FindFileContainingSymbol("aiproxy.v1.ChatService.CreateChatCompletion").name == \
        "aiproxypb/v1/chat.proto"
    assert database.FindFileContainingSymbol("aiproxy.v1.LogService.SearchRequests").name == "aiproxypb/v1/logs.proto"
    assert database.FindFileContainingSymbol("grpc.health.v1.Health.Watch").name == "grpc_health/v1/health.proto"
    for missing in ("aiproxy.v1.ChatService.NoSuchMethod", "aiproxy.v1.NoSuchService.Method", "nothing"):
        with pytest.raises(KeyError):  # a new database: one that holds chat.proto answers its names itself
            ProtoReflectionDescriptorDatabase(channel).FindFileContainingSymbol(missing)


def test_request_metadata_up_to_16_kib_is_always_taken_and_more_always_refused(stub):
    """Between gRPC's soft limit (8 KiB) and its hard one (16 KiB), the server refused calls at random,
    the more often the larger their metadata: the same call failed one time in five at 9 KiB, and
    about every other at 12 KiB, as a client retrying it saw."""
    mock = chat_pb2.ChatCompletionRequest(model="mock")
    mock.messages.add(role="user", content_text="hi")
    taken = (*AUTH, ("x-trace-context", "t" * 12 * 1024))
    for _ in range(20):
        assert stub.CreateChatCompletion(mock, metadata=taken, timeout=10).choices
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChatCompletion(mock, metadata=(*AUTH, ("x-trace-context", "t" * 17 * 1024)), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16384" in err.value.details()
