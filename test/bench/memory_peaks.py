"""Peak memory of the gateway process for one exchange of a large body (docs/benchmarks.md, "Memory
for large bodies"):

    python test/bench/memory_peaks.py [scenario ...]

Each scenario runs against a fresh `aiproxy serve` (GatewayProcess) and a fake upstream in this
process. The peak is the gateway's VmHWM (/proc/<pid>/status) above its level after two small calls,
read after a first and after a second large exchange. Each exchange's request log record must be
complete, valid JSON, holding the large body. Prints a line per scenario; asserts nothing else
(benchmarks are not tests). PYTHONPATH is passed on to the gateway: pointed at another checkout's
internal/ and pkg/, it measures that code.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import orjson

from aiproxy.testing.fake_openai import FakeOpenAIUpstream, JSONReply, StreamReply, completion, text_chunks
from aiproxy.testing.gateway import CLIENT_KEY, GatewayProcess
from aiproxypb.v1 import chat_pb2, chat_pb2_grpc

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MIB = 1024 * 1024
SIZE = 19_000_000  # characters of text in the body: within MAX_BODY_BYTES (20 MiB) with its JSON around it
TEXT = "lorem ipsum " * (SIZE // 12)
HI = [{"role": "user", "content": "hi"}]
SCENARIOS = ("json", "json_emoji", "stream_many", "stream_huge", "request_rest", "request_grpc")


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _post(gateway: GatewayProcess, body: dict) -> httpx.Response:
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json=body, timeout=120)
    assert response.status_code == 200, response.text[:300]
    return response


def _streamed(gateway: GatewayProcess) -> None:
    content = _post(gateway, {"model": "gpt-test", "messages": HI, "stream": True}).content
    assert content.endswith(b"data: [DONE]\n\n") and b'{"error"' not in content[-1000:], content[-300:]


def _exchange(name: str, fake: FakeOpenAIUpstream, gateway: GatewayProcess) -> None:
    if name == "json":
        fake.push(JSONReply(completion(content=TEXT)))
        _post(gateway, {"model": "gpt-test", "messages": HI})
    elif name == "json_emoji":
        fake.push(JSONReply(completion(content=TEXT[:-1] + "\U0001f600")))
        _post(gateway, {"model": "gpt-test", "messages": HI})
    elif name == "stream_many":
        piece = "lorem ipsum " * 80
        fake.push(StreamReply(text_chunks([piece] * (SIZE // len(piece)))))
        _streamed(gateway)
    elif name == "stream_huge":
        fake.push(StreamReply(text_chunks([TEXT[: SIZE // 4]] * 4), per_event=True))
        _streamed(gateway)
    elif name == "request_rest":
        _post(gateway, {"model": "gpt-test", "messages": [{"role": "user", "content": TEXT}]})
    elif name == "request_grpc":
        options = [("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(gateway.grpc_target, options=options) as channel:
            chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(
                chat_pb2.ChatCompletionRequest(model="gpt-test", messages=[{"role": "user", "content_text": TEXT}]),
                metadata=(("authorization", f"Bearer {CLIENT_KEY}"),), timeout=120)
    else:
        raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def main() -> None:
    fake = FakeOpenAIUpstream().start()
    try:
        for name in sys.argv[1:] or SCENARIOS:
            env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else None
            with tempfile.TemporaryDirectory() as tmp, GatewayProcess(Path(tmp), upstream_url=fake.base_url, env=env) as gw:
                for _ in range(2):
                    _post(gw, {"model": "gpt-test", "messages": HI})
                base = _peak_mib(gw.proc.pid)
                peaks = []
                for _ in range(2):
                    _exchange(name, fake, gw)
                    time.sleep(0.5)  # the request log's writer thread has written the record
                    peaks.append(_peak_mib(gw.proc.pid) - base)
                records = gw.request_records()  # each line parsed: complete, valid JSON
                assert len(records) == 4 and all(r["status_code"] == 200 for r in records), records[-1]["error"]
                assert all(len(orjson.dumps(r)) > SIZE for r in records[2:]), "a record without its large body"
                print(f"{name:13s} baseline {base:5.1f} MiB, peak above it: 1st {peaks[0]:6.1f} MiB,"
                      f" 2nd {peaks[1]:6.1f} MiB ({peaks[0] * MIB / SIZE:4.1f}x the body)", flush=True)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
