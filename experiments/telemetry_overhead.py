"""Telemetry overhead: host time of ServerMetrics.observe_step per engine step (and of
observe_output per decode token), the cost the Prometheus metrics add to every iteration.

Target: < 20 us a step. The StepStats timed are real ones: the adaptive policy drives the seeded toy
engine of `adaptive_sarathi.controller.synthetic` under the llama-3-8b-h100-tiered SLO, so every
step carries a budget reason and a predicted step time, as on a server. The stats are gathered
first and then fed to a fresh ServerMetrics (built with that policy's classes and targets), so only
the metrics' own work is timed, in wall time and thread CPU time, after a warm-up of 200 steps.

Prints a table; the full mode also writes experiments/results/telemetry_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.controller.synthetic import SyntheticStream, ToyLatency
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.request import RequestTimeline
from adaptive_sarathi.metrics import ServerMetrics, slo_fields

RESULTS = Path(__file__).parent / "results" / "telemetry_overhead.md"
SLO = "llama-3-8b-h100-tiered"
WARMUP = 200


def gather_steps(steps: int, seed: int) -> list:
    slo = load_slo_policy(SLO)
    truth = ToyLatency()
    policy = make_policy("adaptive", slo, prior=truth, seed=seed)
    stream = SyntheticStream(truth, seed=seed, arrival_rate_per_s=20.0)
    stream.serve_targets_of(policy)
    out = []
    for _ in range(steps):
        out.append(stream.step(policy.decide(stream.next_state())))
        policy.observe(out[-1])
    return out


def percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[int(q * (len(sorted_ns) - 1))] / 1e3


def time_calls(call, items) -> dict[str, float]:
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    wall, cpu = [], []
    for i, item in enumerate(items):
        w0, c0 = clock(), cpu_clock()
        call(item)
        w1, c1 = clock(), cpu_clock()
        if i >= WARMUP:
            wall.append(w1 - w0)
            cpu.append(c1 - c0)
    wall.sort()
    cpu.sort()
    return {"mean": statistics.fmean(wall) / 1e3, "p50": percentile(wall, 0.5), "p99": percentile(wall, 0.99),
            "cpu_mean": statistics.fmean(cpu) / 1e3, "cpu_p99": percentile(cpu, 0.99)}


def decode_outputs(n: int) -> list[RequestOutput]:
    """Outputs of one new (decode) token each, of the interactive class, as a step emits them."""
    outputs = []
    for i in range(n):
        times = [1.0 + 0.03 * k for k in range(2 + i % 64)]
        timeline = RequestTimeline(0.0, 0.2, times[0], times)
        tokens = list(range(len(times)))
        outputs.append(RequestOutput(f"r{i}", [1] * 100, tokens, tokens[-1:], "", "", False, None, timeline,
                                     slo_class="interactive"))
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="few steps, no results file (for CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20000; smoke 400)")
    args = parser.parse_args()
    steps = args.steps or (400 if args.smoke else 20000)

    slo = load_slo_policy(SLO)
    stats = gather_steps(WARMUP + steps, args.seed)
    predicted = sum(s.predicted_duration_s is not None for s in stats[WARMUP:]) / steps
    policy = make_policy("adaptive", slo, seed=args.seed)
    rows = []
    for name, call, items in (
            ("observe_step", None, stats),
            ("observe_output (1 decode token)", None, decode_outputs(WARMUP + steps))):
        metrics = ServerMetrics("m", **slo_fields(slo), budget_policy=policy)
        call = metrics.observe_step if name == "observe_step" else metrics.observe_output
        rows.append((name, time_calls(call, items)))
    header = ("| call | mean wall us | P50 wall us | P99 wall us | mean CPU us | P99 CPU us |\n"
              "|---|---|---|---|---|---|")
    lines = [f"| {name} | {r['mean']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['cpu_mean']:.1f} | "
             f"{r['cpu_p99']:.1f} |" for name, r in rows]
    table = "\n".join([header, *lines])
    print(table)
    print(f"steps with a predicted step time: {predicted:.0%}")
    if not args.smoke:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# Telemetry overhead: ServerMetrics per step\n\n"
            f"Machine: {platform.processor() or platform.machine()} ({platform.system()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, "
            f"prometheus-client {version('prometheus-client')}; date {date.today()}; seed {args.seed}; {steps} "
            f"timed calls after {WARMUP} warm-up calls.\n"
            "Produced by `python experiments/telemetry_overhead.py`. observe_step is fed the StepStats of the "
            f"adaptive policy on the toy engine at 20 requests/s under {SLO} ({predicted:.0%} of them carry a "
            "predicted step time); observe_output is called once per decode token a step emits. Target: "
            "observe_step < 20 us.\n\n"
            f"{table}\n")


if __name__ == "__main__":
    main()
