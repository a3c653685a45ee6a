"""`make bench`: the gateway against direct-to-upstream, measured in one run.

Processes: two fake upstreams (aiproxy.testing.fake_openai, 0 ms and 50 ms latency, streams of 20
content chunks) and two fake Gemini APIs (aiproxy.testing.fake_gemini, the same latencies); one real
gateway per latency (aiproxy.testing.gateway.GatewayProcess, request logging on: `gpt-test` -> openrouter
-> fake upstream, `gemini-test` -> gemini -> fake Gemini), one more with native TLS on the 0 ms upstream,
and one load-generator process (loadgen.py, keep-alive aiohttp / grpc.aio clients). `--peers` adds
LiteLLM's proxy on the same upstreams.

For every upstream latency, stream mode and concurrency (1, 16, 64) it runs direct, the pass-throughs,
aiproxy REST, aiproxy gRPC (and LiteLLM) in interleaved rounds, and reports p50/p99 latency, added latency over direct,
time to first token, requests per second and the gateway process's CPU per request
(utime+stime from /proc/<pid>/stat over the measured phase / requests). Benchmarks are not tests:
it prints targets and ratios, it never asserts. The table goes to stdout and to the "## Gateway"
section of docs/benchmarks.md (full runs only; other sections are left alone).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from aiproxy.testing.gateway import CLIENT_KEY, REPO_ROOT, UPSTREAM_KEYS, GatewayProcess

BENCH_DIR = REPO_ROOT / ".bench"
DOC = REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "## Gateway"
LATENCIES_MS = (0, 50)
CONCURRENCY = (1, 16, 64)
ROUNDS = 3  # interleaved rounds per scenario (full runs)
STREAM_CHUNKS = 20
MESSAGES = [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello to the benchmark."}]
# LiteLLM as measured on this 2-core machine (issue 2), used when --peers is not given.
LITELLM_REFERENCE = {False: {"cpu_ms": 7.5, "rps": 135.0}, True: {"cpu_ms": 21.0, "rps": 48.0}}
TARGETS = {"added_p50_ms": 1.0, "added_ttft_ms": 1.5, "cpu_ratio": 10.0, "rps_ratio": 10.0}
# Issue 2 calibrates its latency targets with a bare aiohttp pass-through that "adds about 0.2 ms" on its
# machine; measured in the same run here, the targets become multiples of what the pass-through adds.
PASSTHROUGH = "aiohttp pass-through"
# The same with design.md's facade -> grpc.aio unix-socket hop (raw bytes): the architecture's own floor.
HOP_PASSTHROUGH = "+ gRPC hop pass-through"
# The fake Gemini API asked directly: the Gemini route's own "direct", since the two fakes differ in speed.
DIRECT_GEMINI = "direct Gemini"
PASSTHROUGH_REFERENCE_MS = 0.2


@dataclass
class Target:
    name: str  # direct | the two pass-throughs | aiproxy REST | aiproxy gRPC | aiproxy REST Gemini | HTTPS | LiteLLM
    kind: str  # rest | grpc
    address: str  # URL of /chat/completions, or host:port for gRPC
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    cpu_pids: list[int] = field(default_factory=list)
    ca_file: str | None = None  # HTTPS targets: the CA the load generator trusts
    wire: str = "openai"  # "gemini": a Gemini API itself (address = …/v1beta/models/<model>)


@dataclass
class Row:
    latency_ms: int
    stream: bool
    concurrency: int
    path: str
    n: int
    errors: int
    p50: float
    p99: float
    ttft_p50: float | None
    rps: float
    cpu_ms: float | None
    client_cpu_pct: float
    others_pct: float
    added_p50: float | None = None
    added_ttft: float | None = None
    rps_vs_direct: float | None = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def budget(latency_ms: int, stream: bool, concurrency: int, quick: bool) -> tuple[int, float]:
    """(requests, max seconds) of one measured phase: bounded so the whole run stays ~2-3 minutes."""
    if latency_ms:
        requests = {1: 40, 16: 480, 64: 1600}[concurrency]
        seconds = 2.5
    else:
        requests = {1: 800, 16: 2000, 64: 2000}[concurrency]
        seconds = 3.5
    if stream:
        requests = requests * 3 // 4
    if quick:
        requests, seconds = max(requests // 8, 10), min(seconds, 0.6)
    return requests, seconds


# --- processes -------------------------------------------------------------------------------


def tls_files(workdir: Path) -> tuple[dict[str, str], str]:
    """A throwaway CA and server certificate (trustme) for the HTTPS gateway."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {name: workdir / f"tls-{name}.pem" for name in ("cert", "key", "ca")}
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    ca.cert_pem.write_to_path(paths["ca"])
    return {"TLS_CERT_FILE": str(paths["cert"]), "TLS_KEY_FILE": str(paths["key"])}, str(paths["ca"])


def _start_server(argv: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Start a helper server that prints its base URL on its first line; return it and the URL."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=log.open("wb"))
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"{' '.join(argv[:2])} did not start (printed {url!r}; see {log})")
    return proc, url


def start_upstream(latency_ms: int, log_dir: Path, module: str = "fake_openai",
                   extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    return _start_server(["-m", f"aiproxy.testing.{module}", "--port", "0", "--latency-ms", str(latency_ms),
                          "--stream-chunks", str(STREAM_CHUNKS), *extra], log_dir / f"{module}-{latency_ms}ms.log")


def start_passthrough(upstream_url: str, log_dir: Path, name: str, grpc_hop: bool) -> tuple[subprocess.Popen, str]:
    """A bare pass-through (passthrough.py) in front of that upstream, with or without the gRPC hop."""
    argv = [str(Path(__file__).resolve().parent / "passthrough.py"), "--upstream", upstream_url]
    return _start_server(argv + (["--grpc-hop"] if grpc_hop else []), log_dir / f"{name}.log")


class LoadGenerator:
    def __init__(self) -> None:
        here = Path(__file__).resolve().parent
        self.proc = subprocess.Popen([sys.executable, str(here / "loadgen.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=here)

    def run(self, job: dict) -> dict:
        self.proc.stdin.write(orjson.dumps(job) + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died; see its stderr above")
        return orjson.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def descendants(pid: int) -> list[int]:
    """pid and all its children's pids (LiteLLM may fork workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parents[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


# --- measuring -------------------------------------------------------------------------------


def body_for(model: str, stream: bool) -> dict:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 32, "temperature": 0}
    if stream:  # with the usage chunk, which OpenRouter (and the fake upstream) always send
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def gemini_job(target: Target, stream: bool) -> dict:
    """The same conversation asked of a Gemini API directly, in its own wire format."""
    system, user = MESSAGES
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return {
        "url": f"{target.address}:{method}",
        "body": {"systemInstruction": {"parts": [{"text": system["content"]}]},
                 "contents": [{"role": "user", "parts": [{"text": user["content"]}]}],
                 "generationConfig": {"maxOutputTokens": 32, "temperature": 0}},
        "expect": '"candidates"',
        "stream_end": '"totalTokenCount"',  # Gemini ends a stream without [DONE]
    }


def run_slice(loadgen: LoadGenerator, target: Target, latency_ms: int, stream: bool, concurrency: int,
              requests: int, seconds: float, bench_pids: list[int]) -> dict:
    job = {
        "kind": target.kind,
        "url" if target.kind == "rest" else "target": target.address,
        "headers": target.headers,
        "body": body_for(target.model, stream),
        "stream": stream,
        "concurrency": concurrency,
        "requests": requests,
        "warmup": min(max(concurrency * 2, 10), requests),
        "max_seconds": seconds,
        "cpu_pids": target.cpu_pids,
        "bench_pids": bench_pids,
        "ca_file": target.ca_file,
    }
    if target.wire == "gemini":
        job.update(gemini_job(target, stream))
    answer = loadgen.run(job)
    if answer["errors"]:
        print(f"bench: {target.name}: {answer['errors']} errors, first: {answer['first_error']}",
              file=sys.stderr, flush=True)
    return answer


def to_row(target: Target, latency_ms: int, stream: bool, concurrency: int, slices: list[dict]) -> Row:
    """One table row from the slices of one scenario (pooled samples, summed times)."""
    lat = [v for a in slices for v in a["latency_ms"]]
    ttft = [v for a in slices for v in a["ttft_ms"]]
    total = {key: sum(a[key] for a in slices) for key in ("errors", "elapsed_s", "cpu_s", "client_cpu_s",
                                                           "others_cpu_s")}
    n = len(lat)
    if not n:
        raise RuntimeError(f"{target.name}: no successful request ({slices[0]['first_error']})")
    return Row(
        latency_ms=latency_ms, stream=stream, concurrency=concurrency, path=target.name, n=n,
        errors=total["errors"], p50=percentile(lat, 50), p99=percentile(lat, 99),
        ttft_p50=percentile(ttft, 50) if ttft else None,
        rps=n / total["elapsed_s"],
        cpu_ms=total["cpu_s"] * 1000 / n if target.cpu_pids else None,
        client_cpu_pct=100 * total["client_cpu_s"] / total["elapsed_s"],
        others_pct=100 * total["others_cpu_s"] / total["elapsed_s"],
    )


def measure_scenario(loadgen: LoadGenerator, targets: list[Target], latency_ms: int, stream: bool,
                     concurrency: int, quick: bool, bench_pids: list[int]) -> list[Row]:
    """All targets of one scenario. The budget is cut into interleaved rounds, in reversed order every
    other round, so every path (and LiteLLM) sees the same moments of a shared machine: the ratios
    between rows are what the targets read."""
    requests, seconds = budget(latency_ms, stream, concurrency, quick)
    rounds = 1 if quick else ROUNDS
    slices: dict[str, list[dict]] = {t.name: [] for t in targets}
    for round_ in range(rounds):
        for target in targets if round_ % 2 == 0 else targets[::-1]:
            slices[target.name].append(run_slice(loadgen, target, latency_ms, stream, concurrency,
                                                 max(requests // rounds, 1), seconds / rounds, bench_pids))
    return [to_row(t, latency_ms, stream, concurrency, slices[t.name]) for t in targets]


def compare(rows: list[Row]) -> None:
    """Added latency of every path over its upstream asked directly (the Gemini route over the fake Gemini)."""
    direct = {(r.path, r.latency_ms, r.stream, r.concurrency): r for r in rows if r.path in ("direct", DIRECT_GEMINI)}
    for row in rows:
        if row.path in ("direct", DIRECT_GEMINI):
            continue
        upstream = DIRECT_GEMINI if row.path == "aiproxy REST Gemini" else "direct"
        base = direct.get((upstream, row.latency_ms, row.stream, row.concurrency))
        if base is None:
            continue
        row.added_p50 = row.p50 - base.p50
        if row.ttft_p50 is not None and base.ttft_p50 is not None:
            row.added_ttft = row.ttft_p50 - base.ttft_p50
        row.rps_vs_direct = row.rps / base.rps


# --- report ----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def table(rows: list[Row]) -> str:
    head = ("| upstream | mode | c | path | n | p50 ms | p99 ms | added p50 ms | TTFT p50 ms | added TTFT ms "
            "| req/s | × direct req/s | gateway CPU ms/req | client CPU % |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.latency_ms} ms | {'stream' if r.stream else 'json'} | {r.concurrency} | {r.path} | {r.n} "
            f"| {_f(r.p50)} | {_f(r.p99)} | {_f(r.added_p50, sign=True)} | {_f(r.ttft_p50)} "
            f"| {_f(r.added_ttft, sign=True)} | {r.rps:.0f} | {_f(r.rps_vs_direct)} | {_f(r.cpu_ms)} "
            f"| {r.client_cpu_pct:.0f} |"
        )
    return "\n".join(lines)


def _find(rows: list[Row], path: str, latency_ms: int, stream: bool, concurrency: int) -> Row | None:
    for r in rows:
        if (r.path, r.latency_ms, r.stream, r.concurrency) == (path, latency_ms, stream, concurrency):
            return r
    return None


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("meets target" if ok else "MISSES target")


def targets_report(rows: list[Row], peers: bool) -> str:
    out = []
    for stream, what, attribute, target in ((False, "p50 latency", "added_p50", TARGETS["added_p50_ms"]),
                                            (True, "time to first token", "added_ttft", TARGETS["added_ttft_ms"])):
        ours, floor = _find(rows, "aiproxy REST", 0, stream, 1), _find(rows, PASSTHROUGH, 0, stream, 1)
        if ours is None or getattr(ours, attribute) is None:
            continue
        added = getattr(ours, attribute)
        mode = "streamed" if stream else "non-stream"
        out.append(f"- Added {what}, REST, c=1, {mode}, 0 ms upstream: **{added:.2f} ms** "
                   f"(target ≤ {target} ms as written): {verdict(added <= target)}")
        floor_added = getattr(floor, attribute) if floor else None
        if floor_added and floor_added > 0:
            allowed = target / PASSTHROUGH_REFERENCE_MS
            out.append(f"  - calibrated: the bare aiohttp pass-through adds {floor_added:.2f} ms here (issue 2: "
                       f"{PASSTHROUGH_REFERENCE_MS} ms), so the target is ≤ {allowed:.1f}× the pass-through = "
                       f"{allowed * floor_added:.2f} ms; aiproxy adds **{added / floor_added:.1f}×**: "
                       f"{verdict(added <= allowed * floor_added)}")
        hop = _find(rows, HOP_PASSTHROUGH, 0, stream, 1)
        if hop is not None and getattr(hop, attribute) is not None:
            out.append(f"  - the architecture's floor: the same pass-through with design.md's gRPC hop adds "
                       f"{getattr(hop, attribute):.2f} ms; aiproxy's own work on top of it: "
                       f"{added - getattr(hop, attribute):+.2f} ms")
    for stream in (False, True):
        mode = "streamed" if stream else "non-stream"
        ours = _find(rows, "aiproxy REST", 0, stream, 64)
        if ours is None or ours.cpu_ms is None:
            continue
        peers_to_compare = []
        peer = _find(rows, "LiteLLM", 0, stream, 64) if peers else None
        if peer is not None and peer.cpu_ms:
            peers_to_compare.append((peer.cpu_ms, peer.rps, "LiteLLM measured in this run"))
        ref = LITELLM_REFERENCE[stream]
        peers_to_compare.append((ref["cpu_ms"], ref["rps"], "LiteLLM as issue 2 measured it"))
        for peer_cpu, peer_rps, source in peers_to_compare:
            cpu_ratio, rps_ratio = peer_cpu / ours.cpu_ms, ours.rps / peer_rps
            out.append(
                f"- CPU per request, REST, c=64, {mode}: aiproxy **{ours.cpu_ms:.2f} ms** vs {peer_cpu:.2f} ms "
                f"({source}) = **{cpu_ratio:.1f}× less** (target ≥ {TARGETS['cpu_ratio']:.0f}×): "
                f"{verdict(cpu_ratio >= TARGETS['cpu_ratio'])}"
            )
            out.append(
                f"- Throughput, REST, c=64, {mode}: aiproxy **{ours.rps:.0f} req/s** vs {peer_rps:.0f} req/s "
                f"({source}) = **{rps_ratio:.1f}×** (target ≥ {TARGETS['rps_ratio']:.0f}×): "
                f"{verdict(rps_ratio >= TARGETS['rps_ratio'])}"
            )
    return "\n".join(out)


def routes_report(rows: list[Row]) -> str:
    """What the Gemini translation and TLS add, each against its plain-HTTP OpenRouter twin."""
    out = []
    for stream in (False, True):
        mode = "streamed" if stream else "non-stream"
        base, gemini = _find(rows, "aiproxy REST", 0, stream, 1), _find(rows, "aiproxy REST Gemini", 0, stream, 1)
        if base and gemini and base.added_p50 is not None and gemini.added_p50 is not None:
            # Each route against its own upstream asked directly: the two fakes do not answer equally fast.
            delta = gemini.added_p50 - base.added_p50
            out.append(f"- Gemini route vs OpenRouter route, REST, c=1, {mode}: the gateway adds "
                       f"{gemini.added_p50:+.2f} ms over the fake Gemini and {base.added_p50:+.2f} ms over the fake "
                       f"OpenAI upstream, so the translation costs **{delta:+.2f} ms** (target ≤ +0.3 ms): "
                       f"{verdict(delta <= 0.3)} (p50 {gemini.p50:.2f} vs {base.p50:.2f} ms)")
        for concurrency in (1, 64):
            plain, tls = _find(rows, "aiproxy REST", 0, stream, concurrency), _find(rows, "aiproxy HTTPS", 0, stream,
                                                                                     concurrency)
            if plain and tls:
                cpu = f", gateway CPU {tls.cpu_ms:.2f} vs {plain.cpu_ms:.2f} ms/req" if tls.cpu_ms and plain.cpu_ms else ""
                out.append(f"- HTTPS vs HTTP (keep-alive), c={concurrency}, {mode}: p50 {tls.p50:.2f} vs "
                           f"{plain.p50:.2f} ms = **{tls.p50 - plain.p50:+.2f} ms**{cpu}")
    return "\n".join(out)


def noise(rows: list[Row]) -> str:
    mean = sum(r.others_pct for r in rows) / len(rows)
    worst = max(rows, key=lambda r: r.others_pct)
    text = (f"Processes outside the benchmark used {mean:.0f} % of a core on average during the measured phases "
            f"(most: {worst.others_pct:.0f} %, during {worst.path} {worst.latency_ms} ms "
            f"{'stream' if worst.stream else 'json'} c={worst.concurrency}).")
    if mean > 15:
        text += " The machine was busy: latencies and req/s are noisier than CPU ms/req."
    return text


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"


def section(rows: list[Row], peers: bool, command: str, elapsed: float) -> str:
    return f"""{SECTION}

Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} with `{command}` ({elapsed:.0f} s) on {machine()}.
Everything shares the same cores: fake upstream(s), the gateway (one cell: aiohttp facade → unix-socket
gRPC → ChatService → httpx, request logging on), LiteLLM when present, and one load-generator process with
keep-alive clients (aiohttp for REST, grpc.aio for gRPC). "direct" is the load generator talking to the fake
upstream itself ("direct Gemini": to the fake Gemini API, in its own format; the Gemini route's "added" is
over it); the two pass-throughs are the baselines the targets are read against (see "The
architecture's floor" below). The fake upstream writes one SSE event per write. Streams carry
{STREAM_CHUNKS} content chunks (plus the role, finish and usage chunks). Each row pools {ROUNDS} rounds interleaved
with the other paths' (in reversed order every other round; full runs), so all paths see the same load.
"added" = path minus direct at the same upstream latency, mode and concurrency; TTFT = time to the first
SSE event / stream message; gateway CPU = utime+stime of the gateway process (all threads, from
/proc/<pid>/stat) over the measured phase ÷ requests; client CPU % = the load generator's own CPU use
(near 100 % means the client, not the gateway, limited that row).

{table(rows)}

{noise(rows)}

Targets (issue 2; reported, never asserted):

{targets_report(rows, peers)}

Routes (issue 3: the Gemini translation; issue 6: what native TLS costs):

{routes_report(rows)}
"""


def write_section(text: str) -> None:
    """Replace only the '## Gateway' section of docs/benchmarks.md (other sections belong to others)."""
    existing = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    lines = existing.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        new = existing.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(new, encoding="utf-8")


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="add LiteLLM's proxy (own venv in .bench/)")
    parser.add_argument("--quick", action="store_true", help="a few hundred requests, for a smoke run (< 60 s)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/benchmarks.md (default: on for full runs, off with --quick)")
    args = parser.parse_args()
    write = (not args.quick) if args.write is None else args.write
    started = time.monotonic()
    BENCH_DIR.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=BENCH_DIR))
    upstreams: dict[int, tuple[subprocess.Popen, str]] = {}
    passthroughs: dict[tuple[int, bool], tuple[subprocess.Popen, str]] = {}
    geminis: dict[int, tuple[subprocess.Popen, str]] = {}
    gateways: dict[int, GatewayProcess] = {}
    tls_gateway: GatewayProcess | None = None
    litellm = None
    loadgen = None
    rows: list[Row] = []
    try:
        for latency in LATENCIES_MS:
            upstreams[latency] = start_upstream(latency, workdir)
            for hop in (False, True):
                passthroughs[latency, hop] = start_passthrough(upstreams[latency][1], workdir,
                                                               f"passthrough-{latency}ms-{hop}", hop)
            geminis[latency] = start_upstream(latency, workdir, "fake_gemini",
                                              ("--api-key", UPSTREAM_KEYS["GEMINI_API_KEY"]))
            gateways[latency] = GatewayProcess(workdir / f"gateway-{latency}ms", upstream_url=upstreams[latency][1],
                                               gemini_url=geminis[latency][1])
            gateways[latency].start()
        # The same gateway with native TLS, on the 0 ms upstream: what HTTPS costs.
        tls_env, ca_file = tls_files(workdir)
        tls_gateway = GatewayProcess(workdir / "gateway-tls", upstream_url=upstreams[0][1], env=tls_env).start()
        if args.peers:
            from peers import LiteLLMProxy, PeerUnavailable

            try:
                litellm = LiteLLMProxy(BENCH_DIR, {f"bench-{lat}ms": upstreams[lat][1] for lat in LATENCIES_MS})
                litellm.start()
            except PeerUnavailable as exc:
                print(f"bench: LiteLLM is unavailable, continuing without it: {exc}", file=sys.stderr, flush=True)
                litellm = None
        loadgen = LoadGenerator()
        bench_pids = [proc.pid for proc, _ in [*upstreams.values(), *passthroughs.values(), *geminis.values()]]
        bench_pids += [gw.proc.pid for gw in [*gateways.values(), tls_gateway]]
        if litellm is not None:
            bench_pids += descendants(litellm.proc.pid)
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        for latency in LATENCIES_MS:
            gw = gateways[latency]
            targets = [
                Target("direct", "rest", f"{upstreams[latency][1]}/chat/completions", "upstream-model"),
                *(Target(HOP_PASSTHROUGH if hop else PASSTHROUGH, "rest",
                         f"{passthroughs[latency, hop][1]}/chat/completions", "upstream-model",
                         cpu_pids=[passthroughs[latency, hop][0].pid]) for hop in (False, True)),
                Target("aiproxy REST", "rest", f"{gw.base_url}/chat/completions", "gpt-test", auth, [gw.proc.pid]),
                Target("aiproxy gRPC", "grpc", gw.grpc_target, "gpt-test", auth, [gw.proc.pid]),
                Target("aiproxy REST Gemini", "rest", f"{gw.base_url}/chat/completions", "gemini-test", auth,
                       [gw.proc.pid]),
                Target(DIRECT_GEMINI, "rest", f"{geminis[latency][1]}/v1beta/models/gemini-test", "gemini-test",
                       {"x-goog-api-key": UPSTREAM_KEYS["GEMINI_API_KEY"]}, wire="gemini"),
            ]
            if latency == 0:
                targets.append(Target("aiproxy HTTPS", "rest",
                                      f"https://127.0.0.1:{tls_gateway.port}/v1/chat/completions", "gpt-test", auth,
                                      [tls_gateway.proc.pid], ca_file))
            if litellm is not None:
                targets.append(Target("LiteLLM", "rest", f"{litellm.base_url}/chat/completions",
                                      f"bench-{latency}ms", {"Authorization": f"Bearer {litellm.master_key}"},
                                      descendants(litellm.proc.pid)))
            for stream in (False, True):
                for concurrency in CONCURRENCY:
                    for row in measure_scenario(loadgen, targets, latency, stream, concurrency, args.quick,
                                                bench_pids):
                        rows.append(row)
                        print(f"bench: {latency:>2} ms {'stream' if stream else 'json  '} c={concurrency:<2} "
                              f"{row.path:<13} n={row.n:<5} p50={row.p50:7.2f} ms  {row.rps:7.0f} req/s"
                              + (f"  cpu={row.cpu_ms:.2f} ms/req" if row.cpu_ms is not None else ""),
                              file=sys.stderr, flush=True)
    finally:
        if loadgen is not None:
            loadgen.close()
        if litellm is not None:
            litellm.stop()
        for gw in [*gateways.values(), *([tls_gateway] if tls_gateway else [])]:
            gw.stop()
        for proc, _ in [*upstreams.values(), *passthroughs.values(), *geminis.values()]:
            proc.terminate()
            proc.wait(10)
    compare(rows)
    command = "make bench-peers" if args.peers else "make bench"
    if args.quick:
        command += " (--quick)"
    text = section(rows, litellm is not None, command, time.monotonic() - started)
    print(text)
    if write:
        write_section(text)
        print(f"bench: wrote the '{SECTION}' section of {DOC.relative_to(REPO_ROOT)}", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
