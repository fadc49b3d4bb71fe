"""An SLO tightened at run time on a served engine: does the new TBT target hold 200 steps later?

Starts `adaptive-sarathi serve` on the embedded SmolLM2 (CPU) with the adaptive policy under
--from-policy (default smollm2-cpu-relaxed: TBT P99 2.5 s), drives it with `bench`'s own client
(synthetic prompts, Poisson arrivals), and --change-after-s seconds into the load PUTs
--to-policy (default smollm2-cpu-strict: TBT P99 500 ms) to /v1/slo_policy. Then, from the
server's step log (step start times, on the same monotonic clock as the client), it takes the
window that starts WINDOW_AFTER_STEPS steps after the change and counts, over every token gap of
every request that ends inside it, the fraction within the new TBT target: the attainment of
the new target (per gap, as the target's percentile is judged). The same fraction before the
change shows that the old policy did not already keep the new target.

Writes experiments/results/slo_change_served.md (--smoke: a short run, printed only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import date
from pathlib import Path

import aiohttp

from adaptive_sarathi.bench.config import BenchConfig
from adaptive_sarathi.bench.run import BenchProgress, run_benchmark
from adaptive_sarathi.controller.slo import load_slo_policy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "slo_change_served.md"
POLICIES = ROOT / "adaptive_sarathi" / "slo_policies"
WINDOW_AFTER_STEPS = 200
TARGET = 0.99


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer /health within {timeout_s:.0f} s")


async def drive(config: BenchConfig, url: str, change_after_s: float, new_policy: str):
    """Run the benchmark; `change_after_s` after its start, PUT `new_policy` (YAML text).
    Returns (results, client's time 0, the change's monotonic time)."""
    progress = BenchProgress()
    bench = asyncio.create_task(run_benchmark(config, progress))
    await asyncio.sleep(change_after_s)
    async with aiohttp.ClientSession() as session:
        async with session.put(url + "/v1/slo_policy", data=new_policy,
                               headers={"Content-Type": "application/yaml"}) as answer:
            if answer.status != 200:
                raise SystemExit(f"PUT /v1/slo_policy answered {answer.status}: {await answer.text()}")
            changed_at = time.perf_counter()
    result = await bench
    return result.results, progress.start_s, changed_at


def token_gaps(results, zero_s: float) -> list[tuple[float, float]]:
    """(time the gap ended, gap seconds) of every token gap of every successful request."""
    gaps = []
    for r in results:
        if not r.success:
            continue
        t = zero_s + r.start_s + r.ttft_s
        for gap in r.itl_s:
            t += gap
            gaps.append((t, gap))
    return gaps


def step_starts(step_log: Path) -> list[float]:
    lines = step_log.read_text().splitlines()[1:]  # after the header
    return [json.loads(line)["start_time_s"] for line in lines]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from-policy", default="smollm2-cpu-relaxed")
    p.add_argument("--to-policy", default="smollm2-cpu-strict")
    p.add_argument("--qps", type=float, default=0.4)
    p.add_argument("--num-requests", type=int, default=100)
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--change-after-s", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a short run, printed only")
    args = p.parse_args(argv)
    if args.smoke:
        args.num_requests, args.qps, args.change_after_s, args.input_len = 12, 2.0, 3.0, 64
    old, new = load_slo_policy(args.from_policy), load_slo_policy(args.to_policy)
    new_yaml = (POLICIES / f"{args.to_policy}.yaml").read_text() if (POLICIES / f"{args.to_policy}.yaml").is_file() \
        else Path(args.to_policy).read_text()
    work = Path(tempfile.mkdtemp(prefix="slo_change_"))
    port, log = free_port(), work / "steps.jsonl"
    url = f"http://127.0.0.1:{port}"
    cli = str(Path(sys.executable).with_name("adaptive-sarathi"))  # the console script beside this interpreter
    server = subprocess.Popen([cli, "serve", "--port", str(port),
                               "--policy", "adaptive", "--slo-policy", args.from_policy, "--step-log", str(log),
                               "--no-enable-prefix-caching"],
                              stdout=(work / "server.log").open("w"), stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, server, timeout_s=300)
        config = BenchConfig(base_url=url, input_len=args.input_len, output_len=args.output_len,
                             num_requests=args.num_requests, qps=args.qps, seed=args.seed, progress=False)
        results, zero_s, changed_at = asyncio.run(drive(config, url, args.change_after_s, new_yaml))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    starts = step_starts(log)
    first_after = next((i for i, t in enumerate(starts) if t >= changed_at), len(starts))
    window_index = first_after + WINDOW_AFTER_STEPS
    gaps = token_gaps(results, zero_s)
    target = new.tightest_tbt.target_s
    before = [g for t, g in gaps if t < changed_at]
    window = [g for t, g in gaps if window_index < len(starts) and t >= starts[window_index]]

    def within(values: list[float]) -> str:
        return f"{sum(g <= target for g in values) / len(values):.1%} of {len(values)}" if values else "no gaps"

    attained = sum(g <= target for g in window) / len(window) if window else float("nan")
    failed = Counter(r.error.split(":")[0] or "unknown" for r in results if not r.success)
    lines = [
        "# An SLO tightened at run time, served", "",
        f"Produced by `python experiments/slo_change_served.py` on {date.today()}, {platform.machine()} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end), embedded SmolLM2 on CPU, "
        f"adaptive policy, prefix caching off. {args.num_requests} requests of {args.input_len} prompt + "
        f"{args.output_len} output tokens at {args.qps:g} qps (Poisson, seed {args.seed}); after "
        f"{args.change_after_s:g} s the policy {old.name} (TBT P{old.tightest_tbt.quantile * 100:g} "
        f"{old.tightest_tbt.target_s * 1e3:.0f} ms) was replaced by {new.name} (TBT "
        f"P{new.tightest_tbt.quantile * 100:g} {target * 1e3:.0f} ms) with PUT /v1/slo_policy.", "",
        "| | token gaps within the new target |", "|---|---:|",
        f"| before the change | {within(before)} |",
        f"| from {WINDOW_AFTER_STEPS} steps after the change to the end | {within(window)} |", "",
        f"Steps: {len(starts)} in all, {first_after} before the change. Requests not served: "
        f"{sum(failed.values())} ({', '.join(f'{n} {e}' for e, n in failed.items()) or 'none'}). Target: at least {TARGET:.0%} of the window's gaps within the new "
        f"target: {'met' if attained >= TARGET else 'missed'}.", ""]
    report = "\n".join(lines)
    print(report)
    if not args.smoke:
        RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
