"""Differential fuzzing of the lossless path through a real gateway: seeded random chat requests
(aiproxy.testing.chatfuzz) sent over REST and over gRPC must reach the fake upstream as sent but for
`model`, and the upstream's random answers and stream chunks must reach the client as it sent them.

FUZZ_SEED=<n> FUZZ_CASES=<n> run other cases; a failure names the seed that reproduces it.
"""

from __future__ import annotations

import grpc
import httpx
import orjson
import pytest

from aiproxy.protojson import json_to_message, message_to_json
from aiproxy.sse import SSEDecoder
from aiproxy.testing.chatfuzz import ChatFuzzer, expected_after_proto
from aiproxy.testing.fake_openai import JSONReply, StreamReply
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.gateway import CLIENT_KEY
from aiproxy.testing.jsoncompare import first_difference
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

SEEDS = fuzz_seeds(0, 200)
MODEL = "local-test"  # an OpenAI-compatible upstream: nothing of the answer is filled in (OpenRouter's fingerprint)
UPSTREAM_MODEL = "llama3"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def case(seed: int) -> tuple[dict, dict | list[dict]]:
    """A request and the upstream's answer to it: a completion, or a stream's chunks."""
    fuzz = ChatFuzzer(seed)
    body = fuzz.request()
    body["model"] = MODEL
    return body, fuzz.chunks() if body.get("stream") is True else fuzz.completion()


def relayed_chunks(request: dict, chunks: list[dict]) -> list[dict]:
    """The chunks a client gets: a usage-only chunk it did not ask for stays at the gateway (README)."""
    options = request.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    return [c for c in chunks if wants_usage or c["choices"] != [] or "usage" not in c]


def json_of(value):
    """The value as a JSON parser reads it back (tuples, key order and such out of the picture)."""
    return orjson.loads(orjson.dumps(value))


def assert_same(got, expected, seed: int, what: str) -> None:
    difference = first_difference(got, expected)
    assert difference is None, f"{what}, {seed_label(seed)}: {difference}"


def upstream_body(fake, sent: dict, in_extra: dict | None = None) -> tuple[dict, dict]:
    """What the upstream received and what it should have: `sent` but for `model`, its keys the
    client wrote into extra_json itself (`in_extra`) as they were."""
    assert len(fake.received) == 1
    received = fake.received[0].json
    assert received.pop("model") == UPSTREAM_MODEL
    expected = {**expected_after_proto(json_of(sent), request=True), **json_of(in_extra or {})}
    expected.pop("model")
    return received, expected


@pytest.fixture()
def http(gateway):
    with httpx.Client(base_url=gateway.base_url, headers=AUTH, timeout=10) as client:
        yield client


def test_random_requests_and_answers_cross_rest_losslessly(http, fake):
    for seed in SEEDS:
        fake.reset()
        body, answer = case(seed)
        fake.push(StreamReply(answer) if isinstance(answer, list) else JSONReply(answer))
        response = http.post("/chat/completions", content=orjson.dumps(body))
        assert response.status_code == 200, f"{seed_label(seed)}: {response.text}"
        assert_same(*upstream_body(fake, body), seed, "request at the upstream")
        if isinstance(answer, list):
            events = SSEDecoder().feed(response.content)
            assert events[-1] == "[DONE]", seed_label(seed)
            got = [orjson.loads(event) for event in events[:-1]]
            assert_same(got, json_of(relayed_chunks(body, answer)), seed, "chunks at the client")
        else:
            assert_same(response.json(), json_of(answer), seed, "answer at the client")


def grpc_request(body: dict, fuzz: ChatFuzzer) -> tuple[chat_pb2.ChatCompletionRequest, dict]:
    """The request as a gRPC client builds it: typed fields where the proto has them, but for some
    keys it wrote into extra_json itself (a client whose stubs predate the field); and those keys."""
    in_extra = {key: value for key, value in body.items() if key not in ("model", "messages") and fuzz.r.random() < 0.2}
    message = json_to_message({k: v for k, v in body.items() if k not in in_extra}, chat_pb2.ChatCompletionRequest)
    if in_extra:
        extra = orjson.loads(message.extra_json) if message.extra_json else {}
        message.extra_json = orjson.dumps({**extra, **in_extra}).decode()
    return message, in_extra


def test_random_requests_and_answers_cross_grpc_losslessly(gateway, fake):
    metadata = (("authorization", AUTH["Authorization"]),)
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        for seed in SEEDS:
            fake.reset()
            body, answer = case(seed)
            request, in_extra = grpc_request(body, ChatFuzzer(-seed - 1))
            if isinstance(answer, list):
                fake.push(StreamReply(answer))
                got = [message_to_json(chunk) for chunk in stub.StreamChatCompletion(request, metadata=metadata, timeout=10)]
                expected = relayed_chunks(body, answer)
            else:
                fake.push(JSONReply(answer))
                got = message_to_json(stub.CreateChatCompletion(request, metadata=metadata, timeout=10))
                expected = answer
            assert_same(*upstream_body(fake, body, in_extra), seed, "request at the upstream")
            assert_same(json_of(got), json_of(expected), seed, "answer at the client")
