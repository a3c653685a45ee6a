"""Load generator for bench_gateway.py, run as its own process so the client's CPU is not the
gateway's. It reads one JSON job per stdin line, runs it and answers one JSON line on stdout:

    job:    {"kind": "rest"|"grpc", "url"|"target", "headers", "body", "stream", "concurrency",
             "requests", "warmup", "max_seconds", "cpu_pids", "bench_pids",
             "expect": what a JSON answer must contain, "stream_end": what a stream must end with
             (REST only; default: OpenAI's '"choices"' and '[DONE]')}
    answer: {"latency_ms": [...], "ttft_ms": [...], "errors": n, "first_error", "elapsed_s",
             "cpu_s": CPU seconds the cpu_pids spent during the measured phase,
             "client_cpu_s": this process's own, "others_cpu_s": processes outside bench_pids}

Clients keep connections alive (one aiohttp connector / one gRPC channel per job). A job runs
`warmup` requests first (connections, caches), then up to `requests` more within `max_seconds`.
Latency is send -> last byte; time to first token is send -> first SSE event / stream message.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time

import aiohttp
import grpc
import orjson

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / _TICKS


def system_busy_seconds() -> float:
    """CPU time all processes spent, from the first line of /proc/stat (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (sum(fields[:3]) + sum(fields[5:8])) / _TICKS


class Result:
    def __init__(self) -> None:
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def fail(self, message: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = message[:300]


def rest_caller(job: dict, session: aiohttp.ClientSession):
    url, headers, payload, stream = job["url"], job.get("headers", {}), orjson.dumps(job["body"]), job["stream"]
    headers = {"Content-Type": "application/json", **headers}
    expect, stream_end = job.get("expect", '"choices"').encode(), job.get("stream_end", "[DONE]").encode()

    async def call(result: Result) -> None:
        start = time.perf_counter()
        async with session.post(url, data=payload, headers=headers) as response:
            if response.status != 200:
                result.fail(f"HTTP {response.status}: {(await response.read())[:200]!r}")
                return
            if not stream:
                body = await response.read()
                end = time.perf_counter()
                if expect not in body:
                    result.fail(f"unexpected body {body[:200]!r}")
                    return
                result.latency.append((end - start) * 1000)
                return
            first = None
            tail = b""
            async for data in response.content.iter_any():
                if first is None and b"data:" in data:
                    first = time.perf_counter()
                tail = (tail + data)[-64:]
            end = time.perf_counter()
            if first is None or stream_end not in tail:
                result.fail(f"stream did not end with {stream_end!r}: {tail!r}")
                return
            result.latency.append((end - start) * 1000)
            result.ttft.append((first - start) * 1000)

    return call


def grpc_caller(job: dict, channel: grpc.aio.Channel):
    from aiproxy.protojson import json_to_message
    from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

    stub = chat_pb2_grpc.ChatServiceStub(channel)
    message = json_to_message(job["body"], chat_pb2.ChatCompletionRequest)
    metadata = tuple((k.lower(), v) for k, v in job.get("headers", {}).items())
    stream = job["stream"]

    async def call(result: Result) -> None:
        start = time.perf_counter()
        try:
            if not stream:
                response = await stub.CreateChatCompletion(message, metadata=metadata)
                end = time.perf_counter()
                if not response.choices:
                    result.fail("response without choices")
                    return
                result.latency.append((end - start) * 1000)
                return
            first = None
            count = 0
            async for _chunk in stub.StreamChatCompletion(message, metadata=metadata):
                if first is None:
                    first = time.perf_counter()
                count += 1
            end = time.perf_counter()
            if first is None:
                result.fail("empty stream")
                return
            result.latency.append((end - start) * 1000)
            result.ttft.append((first - start) * 1000)
        except grpc.aio.AioRpcError as exc:
            result.fail(f"gRPC {exc.code().name}: {exc.details()}")

    return call


async def drive(call, concurrency: int, requests: int, deadline: float | None) -> Result:
    result = Result()
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and (deadline is None or time.perf_counter() < deadline):
            remaining -= 1
            try:
                await call(result)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                result.fail(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


async def run_job(job: dict) -> dict:
    concurrency = job["concurrency"]
    if job["kind"] == "rest":
        tls = ssl.create_default_context(cafile=job["ca_file"]) if job.get("ca_file") else True
        connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60, ssl=tls)
        timeout = aiohttp.ClientTimeout(total=60)
        client = aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",))
        call = rest_caller(job, client)
    else:
        client = grpc.aio.insecure_channel(job["target"])
        call = grpc_caller(job, client)
    try:
        await drive(call, concurrency, max(job.get("warmup", 0), concurrency), None)
        pids, ours = job.get("cpu_pids", []), [*job.get("bench_pids", []), os.getpid()]
        cpu_before, own_before = cpu_seconds(pids), time.process_time()
        bench_before, system_before = cpu_seconds(ours), system_busy_seconds()
        start = time.perf_counter()
        result = await drive(call, concurrency, job["requests"], start + job["max_seconds"])
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(pids) - cpu_before
        own = time.process_time() - own_before
        # CPU that processes outside the benchmark took meanwhile: they make latencies noisy.
        others = (system_busy_seconds() - system_before) - (cpu_seconds(ours) - bench_before)
    finally:
        await client.close()
    return {
        "latency_ms": result.latency,
        "ttft_ms": result.ttft,
        "errors": result.errors,
        "first_error": result.first_error,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "client_cpu_s": own,
        "others_cpu_s": max(others, 0.0),
    }


def main() -> None:
    loop = asyncio.new_event_loop()
    for line in sys.stdin:
        if not line.strip():
            continue
        answer = loop.run_until_complete(run_job(orjson.loads(line)))
        sys.stdout.write(orjson.dumps(answer).decode() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
