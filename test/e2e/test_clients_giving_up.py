"""REST clients that give up mid-call (a client timeout, a chat UI's stop button) must cost the
gateway nothing for good. The facade's handler is cancelled then, while it awaits the cell's gRPC
hop, and grpcio never frees a batch whose awaiting task is cancelled (grpc/grpc#43360): about 2 KB
per call, a gateway serving impatient clients grew without bound."""

from __future__ import annotations

import asyncio

import httpx

from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess

CONCURRENCY = 32
WARM_UP = 4000  # calls before the baseline: pools, caches and the allocator settle
MEASURED = 12000
# The leak was about 1.4 KB per abandoned JSON call, 16 MB over MEASURED calls. A gateway that keeps
# nothing still grows by 1-3 MB over the first ~30,000 abandoned calls, then no more (the allocator
# settling: the Python objects alive stay the same), so the bound leaves room for that.
GROWTH_BOUND = 6 * 1024 * 1024


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


async def _give_up(client: httpx.AsyncClient, index: int) -> None:
    """Three calls in four are JSON answers abandoned before they come, the others streams abandoned
    after their first event; the built-in mock provider paces both (its 10 s leaves a test process
    starved by a busy machine no chance to read an answer before its 50 ms timeout fires)."""
    if index % 4:
        body = {"model": "mock", "messages": [{"role": "user", "content": "[mock:delay_ms=10000] hi"}]}
        try:
            await client.post("/chat/completions", json=body, timeout=0.05)
        except httpx.TimeoutException:
            return
        raise AssertionError("the mock answered before its delay")
    body = {"model": "mock", "stream": True,
            "messages": [{"role": "user", "content": "[mock:delay_ms=20] [mock:chunks=50] hi"}]}
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for _ in response.aiter_lines():
            break  # leaving the block unread closes the connection


async def _calls(gateway: GatewayProcess, count: int) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits,
                                 headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as client:
        pending = iter(range(count))

        async def worker() -> None:
            for index in pending:
                await _give_up(client, index)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await asyncio.sleep(0.5)  # the last calls' cancellations land


def test_clients_that_give_up_leave_no_memory_behind(tmp_path):
    with GatewayProcess(tmp_path) as gateway:
        asyncio.run(_calls(gateway, WARM_UP))
        before = _rss(gateway.proc.pid)
        asyncio.run(_calls(gateway, MEASURED))
        grown = _rss(gateway.proc.pid) - before
    assert grown < GROWTH_BOUND, f"the gateway grew by {grown / 2**20:.1f} MiB over {MEASURED} abandoned calls"
