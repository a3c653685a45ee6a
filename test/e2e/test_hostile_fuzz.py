"""Hostile-value fuzzing through a real gateway: seeded valid chat requests with known fields, at any
depth, of the wrong JSON type or of hostile values (aiproxy.testing.hostilefuzz), on an
OpenAI-compatible route, the Gemini route and the built-in mock, over REST and gRPC.

Each answer is a success, or a client error that says what is wrong (naming the `param` when the
gateway itself refused the request), or the upstream's own error relayed; never a 500, gRPC
INTERNAL/UNKNOWN, a hang or a traceback in the app log, and every request has its request-log
record. What reaches the OpenAI-compatible upstream is what the client sent but for `model`.

FUZZ_SEED=<n> FUZZ_CASES=<n> run other cases; a failure names the seed that reproduces it.
"""

from __future__ import annotations

import collections
import json
import random
import time

import grpc
import httpx
import pytest

from aiproxy.errors import InternalError, InvalidRequest
from aiproxy.protojson import json_to_message
from aiproxy.sse import SSEDecoder
from aiproxy.testing.chatfuzz import expected_after_proto
from aiproxy.testing.fuzzseeds import fuzz_seeds, seed_label, seeds_from_environment
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxy.testing.hostilefuzz import HostileFuzzer, base_request
from aiproxy.testing.jsoncompare import first_difference
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

SEEDS = fuzz_seeds(0, 120)  # over REST
GRPC_SEEDS = SEEDS[:(len(SEEDS) + 1) // 2]
SDK_SEEDS = SEEDS[:40]
BASE_SEEDS = fuzz_seeds(0, 8)
MODELS = ("local-test", "gemini-test", "mock", "mock-tools")  # OpenAI-compatible, Gemini, the built-in mock
# Each case's route: Gemini twice as often, as its translation reads every field the others pass on.
ROUTES = ("local-test", "gemini-test", "mock", "gemini-test", "mock-tools")
UPSTREAM_MODEL = "llama3"  # local-test's model at the upstream
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
TIMEOUT = 10  # seconds: a hung call fails the test instead of hanging it
# Refusals of the body as a whole, before any field is read: no one param to name (test_wire pins them).
WHOLE_BODY_REFUSALS = ("beyond the 64-bit range", "levels deep")
# Client errors the gRPC API may answer with; INTERNAL and UNKNOWN are the gateway's own failures.
GRPC_CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                      grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED}


@pytest.fixture(scope="module")
def gateway(upstream, gemini_server, tmp_path_factory):
    with GatewayProcess(tmp_path_factory.mktemp("hostile-fuzz"), upstream_url=upstream.base_url,
                        gemini_url=gemini_server.base_url) as gw:
        yield gw


def case(seed: int) -> tuple[str, dict, str]:
    """The model, the hostile body and a description of what was changed."""
    fuzz = HostileFuzzer(seed)
    model = ROUTES[seed % len(ROUTES)]
    body, changes = fuzz.request(model)
    return model, body, f"{seed_label(seed)}, {model}: {'; '.join(changes)}"


def upstream_requests(fake, gemini_server) -> int:
    return len(fake.received) + len(gemini_server.requests)


def assert_records(gateway, ids: list[str], timeout: float = 5.0) -> None:
    """Every request has its request-log record (the writer thread may still be catching up)."""
    deadline = time.monotonic() + timeout
    while missing := set(ids) - {record["request_id"] for record in gateway.request_records()}:
        assert time.monotonic() < deadline, f"no request log record for {sorted(missing)[:10]}"
        time.sleep(0.05)


def assert_no_traceback(gateway) -> None:
    tracebacks = [line for line in gateway.stderr_path.read_text().splitlines() if "Traceback" in line]
    assert not tracebacks, "\n".join(tracebacks)


def check_error(error: object, what: str, refused_here: bool) -> None:
    """An OpenAI error object that says what is wrong; the gateway's own refusal names its param."""
    assert isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"], what
    assert error["message"] != InternalError().message and error.get("type") != "server_error", f"{what}: {error}"
    whole_body = any(text in error["message"] for text in WHOLE_BODY_REFUSALS)
    if refused_here and error.get("type") == "invalid_request_error" and not whole_body:
        assert error.get("param"), f"{what}: no param in {error}"


@pytest.mark.parametrize("model", MODELS)
def test_the_bodies_before_mutation_are_answered(gateway, model):
    """The mutations start from requests every route answers: a refusal is the mutation's doing."""
    for seed in BASE_SEEDS:
        body = base_request(model, random.Random(seed))
        response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=AUTH, timeout=TIMEOUT)
        assert response.status_code == 200, f"{seed_label(seed)}: {response.text}"


def test_hostile_requests_over_rest(gateway, fake, gemini_server):
    problems = []
    ids = []
    statuses: collections.Counter = collections.Counter()
    for seed in SEEDS:
        fake.reset()
        gemini_server.reset()
        model, body, what = case(seed)
        request_id = f"hostile-rest-{seed}"
        ids.append(request_id)
        try:
            response = httpx.post(f"{gateway.base_url}/chat/completions", content=json.dumps(body).encode(),
                                  headers={**AUTH, "X-Request-ID": request_id, "Content-Type": "application/json"},
                                  timeout=TIMEOUT)
        except httpx.TimeoutException:
            problems.append(f"{what}: no answer in {TIMEOUT} s")
            continue
        statuses[response.status_code] += 1
        try:
            check_rest_answer(response, body, what, fake, gemini_server, model)
        except AssertionError as exc:
            problems.append(str(exc)[:600])
    assert_records(gateway, ids)
    assert not problems, f"{len(problems)} of {len(SEEDS)} cases:\n" + "\n".join(problems)
    assert seeds_from_environment() or (statuses[200] and statuses[400]), statuses  # the mix a hostile body should get
    assert_no_traceback(gateway)


def check_rest_answer(response: httpx.Response, body: dict, what: str, fake, gemini_server, model: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    refused_here = upstream_requests(fake, gemini_server) == 0
    if response.status_code >= 400:
        check_error(response.json().get("error"), what, refused_here)
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = SSEDecoder().feed(response.content)
        assert events and events[-1] == "[DONE]", f"{what}: {events[-3:]}"
        for event in events[:-1]:
            error = json.loads(event).get("error")
            if error is not None:
                check_error(error, what, False)
    if model == "local-test":
        assert len(fake.received) == 1, what
        received = fake.received[0].json
        assert received.pop("model") == UPSTREAM_MODEL, what
        expected = expected_after_proto(json.loads(json.dumps(body)), request=True)
        expected.pop("model")
        difference = first_difference(received, expected)
        assert difference is None, f"{what}: the upstream got another body: {difference}"


def test_hostile_requests_over_grpc(gateway, fake, gemini_server):
    """The same bodies as a gRPC client sends them: typed fields where the value fits, the rest in
    extra_json (json_to_message, as the lossless fuzz does)."""
    problems = []
    ids = []
    outcomes: collections.Counter = collections.Counter()
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        for seed in GRPC_SEEDS:
            fake.reset()
            gemini_server.reset()
            model, body, what = case(seed)
            request_id = f"hostile-grpc-{seed}"
            try:
                request = json_to_message(body, chat_pb2.ChatCompletionRequest)
            except (ValueError, InvalidRequest):  # an integer past 64 bits, nesting past 254 levels: not sendable
                continue
            ids.append(request_id)
            metadata = (("authorization", AUTH["Authorization"]), ("x-request-id", request_id))
            stream = body.get("stream") is True
            try:
                if stream:
                    list(stub.StreamChatCompletion(request, metadata=metadata, timeout=TIMEOUT))
                else:
                    stub.CreateChatCompletion(request, metadata=metadata, timeout=TIMEOUT)
                outcomes[grpc.StatusCode.OK] += 1
            except grpc.RpcError as exc:
                outcomes[exc.code()] += 1
                if exc.code() not in GRPC_CLIENT_ERRORS or not exc.details():
                    problems.append(f"{what}: {exc.code()} {exc.details()!r}"[:600])
    assert_records(gateway, ids)
    assert not problems, f"{len(problems)} of {len(GRPC_SEEDS)} cases:\n" + "\n".join(problems)
    assert seeds_from_environment() or (outcomes[grpc.StatusCode.OK] and outcomes[grpc.StatusCode.INVALID_ARGUMENT]), outcomes
    assert_no_traceback(gateway)


def test_hostile_requests_through_the_openai_sdk(client, gateway):
    """The official SDK passes such values on (its types are not checked at run time); it must get an
    answer or an API error under 500, never its InternalServerError."""
    openai = pytest.importorskip("openai")
    for seed in SDK_SEEDS:
        _, body, what = case(seed)
        model, messages, stream = body.pop("model"), body.pop("messages"), body.get("stream")
        kwargs = {"stream": body.pop("stream")} if isinstance(stream, bool) else {}  # else sent as it is
        try:
            answer = client.chat.completions.create(model=model, messages=messages, extra_body=body, **kwargs)
            if stream:
                list(answer)
        except openai.APIStatusError as exc:
            assert exc.status_code < 500, f"{what}: {exc}"
    assert_no_traceback(gateway)
