"""aiproxy.chat.record.Exchange.record: any response shape still gives a record; ChatGateway.finish
records failures as the client sees them."""

from __future__ import annotations

import orjson
import pytest

from aiproxy.chat.gateway import ChatGateway
from aiproxy.chat.record import Exchange, RequestLog, _serialised
from aiproxy.config import ProviderSettings
from aiproxy.errors import InternalError, ProviderNotConfigured
from aiproxy.identity import KeyHasher
from aiproxy.routing import ModelRouter

ODD_RESPONSES = [
    {"id": "x", "object": "chat.completion", "choices": 5},
    {"choices": "abc"},
    {"choices": [5, {"finish_reason": "stop"}]},
    {"choices": [{"finish_reason": {"nested": 1}}], "usage": 7},
    {"choices": [[]], "usage": [1, 2]},
    {"choices": {"0": {"finish_reason": "stop"}}},
    [1, 2],
    "text",
    None,
]


@pytest.mark.parametrize("response", ODD_RESPONSES, ids=range(len(ODD_RESPONSES)))
def test_record_takes_only_well_typed_fields(response):
    exchange = Exchange(request_id="r", transport="http", server_id="s", response=response)
    record = exchange.record()
    assert record["finish_reason"] is None and record["usage"] is None
    assert record["response"] == (response if isinstance(response, dict) else None)
    orjson.dumps(record)


def test_record_of_a_well_formed_response():
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    response = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "length"}], "usage": usage}
    record = Exchange(request_id="r", transport="http", server_id="s", response=response).record()
    assert (record["finish_reason"], record["usage"]) == ("length", usage)


class _Captured(RequestLog):
    def __init__(self) -> None:
        super().__init__(enabled=True)
        self.records: list[dict] = []

    def write(self, exchange: Exchange) -> None:
        self.records.append(exchange.record())


def test_an_unexpected_failure_is_recorded_as_the_client_is_answered(tmp_path):
    log = _Captured()
    gateway = ChatGateway(ModelRouter({}), {}, log, KeyHasher("secret", tmp_path), "s", max_answer_size=1024)
    gateway.finish(gateway.begin(None, "r", "grpc", stream=False), KeyError("a bug"))
    [record] = log.records
    answer = InternalError()  # what the interceptor sends the client
    assert record["status_code"] == answer.http_status
    assert record["error"] == {"message": answer.message, "type": answer.error_type, "code": answer.code}
    assert record["response"] == answer.to_body()


def test_a_provider_without_a_key_names_the_setting_to_set(tmp_path):
    """A provider added without api_key_env (PROVIDERS__VLLM__KIND=openai, …) has no variable to name:
    the 503 said "the operator must set its api_key", which is no setting anyone can find."""
    vllm = ProviderSettings(name="vllm", kind="openai", base_url="http://127.0.0.1:9/v1")
    gateway = ChatGateway(ModelRouter({}), {"vllm": vllm}, _Captured(), KeyHasher("secret", tmp_path), "s",
                          max_answer_size=1024)
    with pytest.raises(ProviderNotConfigured) as error:
        gateway._provider("vllm", "v")
    assert "PROVIDERS__VLLM__API_KEY" in error.value.message and "API_KEY_REQUIRED=false" in error.value.message


def test_a_body_too_deep_for_the_record_is_left_out_and_the_other_kept():
    """The gateway accepts a body orjson can write (254 levels), and the record nests it one level
    deeper: that body becomes null, the other body stays."""
    deep: list = []
    for _ in range(253):
        deep = [deep]
    record = {"request_id": "r1", "request": {"model": "m", "x": deep}, "response": {"choices": []}}
    line = orjson.loads(_serialised(record))
    assert line["request"] is None and line["response"] == {"choices": []}
    line = orjson.loads(_serialised({**record, "request": {"model": "m"}, "response": {"x": deep}}))
    assert line["request"] == {"model": "m"} and line["response"] is None


class _UpstreamStream:
    """An open upstream stream as providers return it: batches of chunks, headers, usage, aclose()."""

    headers = {"x-ratelimit-remaining-requests": "9"}
    usage = None

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self):
        yield [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}]

    async def aclose(self) -> None:
        self.closed = True


class _StreamingProvider:
    def __init__(self) -> None:
        self.stream = _UpstreamStream()

    async def open_stream(self, upstream) -> _UpstreamStream:
        return self.stream


@pytest.mark.parametrize("batches_read", [0, 1])
def test_a_stream_left_before_or_after_its_first_batch_closes_its_upstream_call(tmp_path, batches_read):
    """A gRPC call cancelled while its headers went out left the relay's generator unstarted: closing
    it ran none of its body, so the upstream call stayed open (and the answer unrecorded) until the
    garbage collector found it."""
    import asyncio

    from aiproxy.chat.gateway import Call

    gateway = ChatGateway(ModelRouter({}), {}, _Captured(), KeyHasher("secret", tmp_path), "s", max_answer_size=1024)
    provider = _StreamingProvider()
    call = Call(gateway.begin(None, "r", "grpc", stream=True), provider, None)

    async def leave_early() -> None:
        with pytest.raises(asyncio.CancelledError):
            async with gateway.open_stream(call) as (batches, headers):
                assert headers == _UpstreamStream.headers
                if batches_read:
                    await anext(batches)
                raise asyncio.CancelledError  # the client went away

    asyncio.run(leave_early())
    assert provider.stream.closed
    assert call.exchange.response is not None
