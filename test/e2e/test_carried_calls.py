"""The REST facade's chat calls share one CellHop.Exchange stream per cell (docs/architecture.md, "Chat
calls over the gRPC hop"): under concurrent load, with calls failing and clients giving up among
them, every client still gets its own answer, its own stream, its own error and its own request id."""

from __future__ import annotations

import asyncio
import random

import httpx
import orjson

from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess

CONCURRENCY = 48
CALLS = 600


async def _one(client: httpx.AsyncClient, index: int, outcomes: dict[str, int]) -> None:
    kind = ("json", "stream", "error", "give_up")[index % 4]
    prompt = f"call {index} {random.random()}"
    request_id = f"carried-{index}"
    headers = {"X-Request-ID": request_id}
    if kind == "give_up":
        body = {"model": "mock", "messages": [{"role": "user", "content": f"[mock:delay_ms=5000] {prompt}"}]}
        try:
            await client.post("/chat/completions", json=body, headers=headers, timeout=0.05)
        except httpx.TimeoutException:
            outcomes[kind] += 1
        return
    content = f"[mock:error=429] {prompt}" if kind == "error" else f"[mock:chunks=7] {prompt}"
    body = {"model": "mock", "stream": kind == "stream", "messages": [{"role": "user", "content": content}]}
    response = await client.post("/chat/completions", json=body, headers=headers)
    assert response.headers["x-request-id"] == request_id
    if kind == "error":
        assert response.status_code == 429 and response.headers["retry-after"] == "1", response.text
    elif kind == "json":
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == prompt
    else:
        assert response.status_code == 200, response.text
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert text == prompt
    outcomes[kind] += 1


def test_concurrent_calls_of_every_kind_each_get_their_own_answer(tmp_path):
    outcomes = {"json": 0, "stream": 0, "error": 0, "give_up": 0}

    async def load(gateway: GatewayProcess) -> None:
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=30,
                                     headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as client:
            pending = iter(range(CALLS))

            async def worker() -> None:
                for index in pending:
                    await _one(client, index, outcomes)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    with GatewayProcess(tmp_path) as gateway:
        asyncio.run(load(gateway))
        given_up = gateway.wait_for_record(f"carried-{CALLS - 1}")
        served = gateway.wait_for_record(f"carried-{CALLS - 4}")
    assert outcomes == {kind: CALLS // 4 for kind in outcomes}
    assert given_up["status_code"] == 499 and served["status_code"] == 200
