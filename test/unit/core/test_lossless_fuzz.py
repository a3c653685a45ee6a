"""Differential fuzzing of the conversions on the lossless path, as the gateway chains them: seeded
random chat requests (aiproxy.testing.chatfuzz) read as the REST facade reads a body, made a message,
sent over the wire and turned back into the JSON the provider writes upstream must be what the client
sent; random upstream answers and stream chunks must come back to the client the same way.

FUZZ_SEED=<n> FUZZ_CASES=<n> run other cases; a failure names the seed that reproduces it.
"""

from __future__ import annotations

import orjson

from aiproxy.protojson import dump_parsed, integer_beyond_64_bits, json_to_message, message_to_json
from aiproxy.rpc.chat_service import answer_message, request_body
from aiproxy.testing.chatfuzz import ChatFuzzer, expected_after_proto
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label
from aiproxy.testing.jsoncompare import first_difference
from aiproxypb.v1 import chat_pb2

SEEDS = fuzz_seeds(0, 1500)


def over_the_wire(message):
    return type(message).FromString(message.SerializeToString())


def request_at_upstream(body: dict) -> dict:
    """The body as the upstream reads it: the facade's parse and conversion, gRPC, the servicer's."""
    raw = orjson.dumps(body)
    assert integer_beyond_64_bits(raw) is None
    message = json_to_message(orjson.loads(raw), chat_pb2.ChatCompletionRequest)
    return orjson.loads(dump_parsed(request_body(over_the_wire(message))))


def answer_at_client(body: dict, cls) -> dict:
    """An upstream answer or chunk as the client reads it: the servicer's conversion, gRPC, the facade's."""
    message = answer_message(orjson.loads(orjson.dumps(body)), cls)
    return orjson.loads(orjson.dumps(message_to_json(over_the_wire(message))))


def test_random_bodies_cross_the_conversions_losslessly():
    for seed in SEEDS:
        fuzz = ChatFuzzer(seed)
        request = fuzz.request()
        pairs = [(request_at_upstream(request), expected_after_proto(request, request=True), "request")]
        completion = fuzz.completion()
        pairs.append((answer_at_client(completion, chat_pb2.ChatCompletion), completion, "answer"))
        pairs += [(answer_at_client(chunk, chat_pb2.ChatCompletionChunk), chunk, "chunk") for chunk in fuzz.chunks()]
        for got, sent, what in pairs:
            difference = first_difference(got, orjson.loads(orjson.dumps(sent)))
            assert difference is None, f"{what}, {seed_label(seed)}: {difference}"
