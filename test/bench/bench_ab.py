#!/usr/bin/env python3
"""Paired A/B of the gateway's CPU per request: the code at a git revision against the working tree.

    make bench-ab REV=HEAD~1        # or: python test/bench/bench_ab.py HEAD~1 --rounds 8 --stream

Both gateways run against one fake upstream and are loaded at the same time, each by its own load
generator, so a shared machine's drift hits both alike: two identical gateways read within ±3 % this
way, against ±10-25 % with one gateway loaded after the other. The second-loaded position reads a
few percent differently, so every round runs in both orders and the result is the geometric mean of
the two orders' median ratios. For changes too small for `make bench`'s table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import bench_gateway as bench

from aiproxy.testing.gateway import CLIENT_KEY, UPSTREAM_KEYS, GatewayProcess

REPO = Path(__file__).resolve().parents[2]


def _worktree(rev: str, where: Path) -> Path:
    tree = where / "rev"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
    return tree


def _rounds(pair: list[tuple[str, dict]], stream: bool, concurrency: int, rounds: int, seconds: float,
            work: Path, upstream_url: str, gemini_url: str | None) -> list[float]:
    """CPU-per-request ratios second/first, one per round, with the two gateways loaded together."""
    gateways, targets, loaders = [], [], []
    try:
        for name, env in pair:
            gateway = GatewayProcess(work / name, upstream_url=upstream_url, gemini_url=gemini_url,
                                     env={"LOG_LEVEL": "WARNING", **env}).start()
            gateways.append(gateway)
            model = "gemini-test" if gemini_url else "gpt-test"
            targets.append(bench.Target(name, "rest", f"{gateway.base_url}/chat/completions", model,
                                        {"Authorization": f"Bearer {CLIENT_KEY}"}, [gateway.proc.pid]))
            loaders.append(bench.LoadGenerator())
        for target, loader in zip(targets, loaders, strict=True):  # warm-up
            bench.run_slice(loader, target, 0, stream, concurrency, 1000, 3.0, [])
        answers: list[dict] = [{}, {}]

        def load(i: int) -> None:
            answers[i] = bench.run_slice(loaders[i], targets[i], 0, stream, concurrency, 10**7, seconds, [])

        ratios = []
        for n in range(rounds):
            threads = [threading.Thread(target=load, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            cpu = [a["cpu_s"] * 1000 / max(1, len(a["latency_ms"])) for a in answers]
            ratios.append(cpu[1] / cpu[0])
            print(f"  round {n + 1}: {pair[0][0]} {cpu[0]:.3f}  {pair[1][0]} {cpu[1]:.3f} ms/req"
                  f"  ratio {ratios[-1]:.3f}", file=sys.stderr, flush=True)
        return ratios
    finally:
        for loader in loaders:
            loader.close()
        for gateway in gateways:
            gateway.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare the working tree against (e.g. HEAD~1)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per order (default 6)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of a round (default 6)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests per gateway (default 32)")
    parser.add_argument("--stream", action="store_true", help="streamed requests instead of JSON")
    parser.add_argument("--gemini", action="store_true", help="the Gemini route (a fake Gemini API) instead of OpenRouter's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        work = Path(tmp)
        tree = _worktree(args.rev, work)
        upstream, upstream_url = bench.start_upstream(0, work)
        gemini, gemini_url = (bench.start_upstream(0, work, "fake_gemini", ("--api-key", UPSTREAM_KEYS["GEMINI_API_KEY"]))
                              if args.gemini else (None, None))
        try:
            base = ("rev", {"PYTHONPATH": f"{tree / 'internal'}:{tree / 'pkg'}"})
            new = ("tree", {})
            print(f"{args.rev} first:", file=sys.stderr)
            forward = _rounds([base, new], args.stream, args.concurrency, args.rounds, args.seconds, work / "a",
                              upstream_url, gemini_url)
            print("working tree first:", file=sys.stderr)
            backward = _rounds([new, base], args.stream, args.concurrency, args.rounds, args.seconds, work / "b",
                               upstream_url, gemini_url)
        finally:
            upstream.kill()
            if gemini is not None:
                gemini.kill()
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    one, other = statistics.median(forward), statistics.median(backward)
    print(f"working tree / {args.rev}, CPU per {'streamed' if args.stream else 'JSON'} request at "
          f"c={args.concurrency}: {math.sqrt(one / other):.3f} (medians by order: {one:.3f}, 1/{other:.3f};"
          f" rounds {', '.join(f'{r:.2f}' for r in forward)} | {', '.join(f'{r:.2f}' for r in backward)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
