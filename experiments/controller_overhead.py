"""Controller overhead: host time of decide() + observe() per engine step, for every budget policy.

The budget decision sits on the critical path of every iteration, so its cost adds to every token
gap (target: < 100 us a step for `adaptive`). Each policy drives the seeded toy engine of
`adaptive_sarathi.controller.synthetic` (Poisson arrivals, Sarathi-style batches, an H100-like
linear-plus-tile step time with 5% noise) under the llama-3-8b-h100-strict SLO; only the
policy's own calls are timed, in wall time and in thread CPU time (which leaves out time the OS
gave other processes), after a warm-up of 200 steps. "prior" rows give the policy the toy
engine's true latency model, as the simulator's profile would be.

Prints a table; the full mode also writes experiments/results/controller_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import river

from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.controller.synthetic import SyntheticStream, ToyLatency

RESULTS = Path(__file__).parent / "results" / "controller_overhead.md"
POLICIES = (("fixed:512", False), ("two_level", False), ("slack", False), ("slack", True),
            ("adaptive", False), ("adaptive", True))
WARMUP = 200


def measure(spec: str, with_prior: bool, steps: int, seed: int) -> dict[str, float]:
    slo = load_slo_policy("llama-3-8b-h100-strict")
    truth = ToyLatency()
    policy = make_policy(spec, slo, prior=truth if with_prior else None, seed=seed)
    stream = SyntheticStream(truth, seed=seed, arrival_rate_per_s=20.0)
    stream.serve_targets_of(policy)
    wall, cpu, decide_cpu, observe_cpu, budgets, gaps = [], [], [], [], [], []
    # Wall time is what a step pays; thread CPU time leaves out time the OS gave other processes,
    # so it shows the policy's own cost on a busy host.
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(WARMUP + steps):
        state = stream.next_state()
        w0, c0 = clock(), cpu_clock()
        budget = policy.decide(state)
        w1, c1 = clock(), cpu_clock()
        stats = stream.step(budget)
        w2, c2 = clock(), cpu_clock()
        policy.observe(stats)
        w3, c3 = clock(), cpu_clock()
        if i >= WARMUP:
            wall.append(w1 - w0 + w3 - w2)
            cpu.append(c1 - c0 + c3 - c2)
            decide_cpu.append(c1 - c0)
            observe_cpu.append(c3 - c2)
            budgets.append(budget.token_budget)
            if stats.max_token_gap_s > 0:
                gaps.append(stats.max_token_gap_s)
    wall.sort()
    cpu.sort()
    return {
        "decide_us": statistics.fmean(decide_cpu) / 1e3,
        "observe_us": statistics.fmean(observe_cpu) / 1e3,
        "mean_us": statistics.fmean(wall) / 1e3,
        "p50_us": wall[len(wall) // 2] / 1e3,
        "p99_us": wall[int(0.99 * (len(wall) - 1))] / 1e3,
        "cpu_mean_us": statistics.fmean(cpu) / 1e3,
        "cpu_p99_us": cpu[int(0.99 * (len(cpu) - 1))] / 1e3,
        "mean_budget": statistics.fmean(budgets),
        "p99_gap_ms": sorted(gaps)[int(0.99 * (len(gaps) - 1))] * 1e3 if gaps else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="few steps, no results file (for CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per policy (default 20000; smoke 300)")
    args = parser.parse_args()
    steps = args.steps or (300 if args.smoke else 20000)

    header = ("| policy | decide CPU us | observe CPU us | mean CPU us | P99 CPU us | mean wall us | P50 wall us "
              "| P99 wall us | mean budget | P99 TBT ms |\n|---|---|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    lines = []
    for spec, with_prior in POLICIES:
        r = measure(spec, with_prior, steps, args.seed)
        name = f"{spec} (prior)" if with_prior else spec
        lines.append(f"| {name} | {r['decide_us']:.1f} | {r['observe_us']:.1f} | {r['cpu_mean_us']:.1f} | "
                     f"{r['cpu_p99_us']:.1f} | {r['mean_us']:.1f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
                     f"{r['mean_budget']:.0f} | {r['p99_gap_ms']:.1f} |")
        print(lines[-1], flush=True)
    table = "\n".join([header, *lines])
    if not args.smoke:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# Controller overhead: decide() + observe() per step\n\n"
            f"Machine: {platform.processor() or platform.machine()} ({platform.system()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, river "
            f"{river.__version__}; date {date.today()}; seed {args.seed}; {steps} timed steps per policy after "
            f"{WARMUP} warm-up steps.\n"
            "Produced by `python experiments/controller_overhead.py`. Toy engine at 20 requests/s under "
            "the llama-3-8b-h100-strict SLO (TBT P99 65 ms); \"P99 TBT\" is the toy engine's largest "
            "token gap per step, for context only.\n\n"
            f"{table}\n")


if __name__ == "__main__":
    main()
