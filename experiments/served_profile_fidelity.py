"""Does a profile fitted from served steps make the simulator match the GPU better than the calibration's?

Reads one `real_gpu_slo.py` call (its NAME.json and NAME_steps.csv.gz, the per-step trace of every
real run, and NAME_profile.csv, the profile its calibration bursts fitted), then:
1. fits a token-knots profile from the step periods of the runs of repeat --train-repeat (the
   served steps, host time between steps included: what `profile --from-stats` fits from a
   served run's step log);
2. scores both profiles on the steps of the other repeats (never fitted on): median and P90 of
   |observed period / predicted - 1|, decode-only and mixed steps apart;
3. re-simulates every (policy, rate) of the call with each profile, on the same requests (the
   call's trace, rate, count and seed) and the engine's KV blocks, and sets the simulated P99
   TTFT and TBT beside the mean over the held-out repeats of the real runs. A third column keeps
   the served profile as the policy's prior but times each simulated step as its prediction x a
   ratio drawn from the fitted steps' observed/predicted ratios (decode-only and mixed apart;
   mean of NOISE_SEEDS simulations): the simulator with the GPU's step-to-step noise, which the
   adaptive policy's tail margin reacts to.

CPU only, seconds per run. Writes --results (markdown) when given, else prints.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.latency.profile import TOKEN_KNOTS, ProfileLatencyModel, ProfileRow, load_profile
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.simulator import simulate
from adaptive_sarathi.scenario import slo_targets
from adaptive_sarathi.workloads import workload_from_flags

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces"
NOISE_SEEDS = (1, 2, 3)


class ResampledNoise:
    """A latency model: `base`'s prediction x a ratio drawn (seeded) from `ratios` of the step's
    kind ("decode" for decode-only steps, else "mixed")."""

    def __init__(self, base, ratios: dict[str, list[float]], seed: int):
        self.base, self.ratios, self._rng = base, ratios, random.Random(seed)

    def step_time(self, shape: StepShape) -> float:
        ratios = self.ratios["decode" if shape.num_prefill_seqs == 0 else "mixed"]
        return self.base.step_time(shape) * ratios[self._rng.randrange(len(ratios))]


def read_steps(path: Path) -> dict[str, list[tuple[StepShape, float]]]:
    """Per run id: (shape, period s) of every step that has a period (busy until the next)."""
    steps: dict[str, list[tuple[StepShape, float]]] = defaultdict(list)
    with gzip.open(path, "rt") as f:
        for row in csv.DictReader(f):
            if not row["period_s"] or math.isnan(float(row["period_s"])):
                continue
            shape = StepShape(int(row["prefill_tokens"]), int(row["decode_tokens"]), int(row["prefill_seqs"]),
                              int(row["context_tokens"]), int(row["decode_context_tokens"]))
            steps[row["run"]].append((shape, float(row["period_s"])))
    return steps


def step_error(model, steps: list[tuple[StepShape, float]]) -> dict[str, tuple[float, float, int]]:
    """(median, P90, count) of |observed / predicted - 1|, decode-only and mixed steps apart."""
    errors: dict[str, list[float]] = {"decode": [], "mixed": []}
    for shape, period in steps:
        predicted = model.step_time(shape)
        if predicted > 0:
            errors["decode" if shape.num_prefill_seqs == 0 else "mixed"].append(abs(period / predicted - 1))
    return {k: (float(np.median(v)), float(np.percentile(v, 90)), len(v)) if v else (math.nan, math.nan, 0)
            for k, v in errors.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--call", type=Path, required=True, help="a real_gpu_slo call's NAME.json")
    p.add_argument("--train-repeat", type=int, default=0, help="the repeat whose runs' steps are fitted")
    p.add_argument("--traces", type=Path, default=TRACES, help="where the call's trace file is read")
    p.add_argument("--results", type=Path, default=None, help="markdown file to write")
    args = p.parse_args(argv)
    call = json.loads(args.call.read_text())
    meta, flags = call["meta"], call["meta"]["flags"]
    stem = args.call.with_suffix("")
    steps = read_steps(stem.with_name(stem.name + "_steps.csv.gz"))
    calibrated = load_profile(stem.with_name(stem.name + "_profile.csv"))
    runs = [r for r in call["runs"] if "real" in r]
    train = [s for r in runs if r["repeat"] == args.train_repeat for s in steps[r["run_id"]]]
    test = [s for r in runs if r["repeat"] != args.train_repeat for s in steps[r["run_id"]]]
    served = ProfileLatencyModel(tuple(ProfileRow(shape, period) for shape, period in train),
                                 tags={"form": TOKEN_KNOTS, "source": f"served steps of {args.call.name}, repeat "
                                                                      f"{args.train_repeat}"})
    profiles = {"calibration bursts": calibrated, "served steps": served}
    ratios: dict[str, list[float]] = {"decode": [], "mixed": []}
    for shape, period in train:
        ratios["decode" if shape.num_prefill_seqs == 0 else "mixed"].append(period / served.step_time(shape))
    columns = [*profiles, "served steps + noise"]

    slo = load_slo_policy(flags["slo_policy"] or "llama-3-8b-h100-strict")
    blocks = int(re.search(r"(\d+) KV blocks", meta["engine"]).group(1))
    config = SchedulerConfig(name="sarathi", max_model_len=flags["max_total_len"])
    trace = args.traces / Path(flags["trace"]).name
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in runs:
        if r["repeat"] != args.train_repeat:
            groups[(r["policy"], r["rate_qps"])].append(r)

    lines = [f"# Simulator fidelity with a profile fitted from served steps: {args.call.name}", "",
             f"Produced by `python experiments/served_profile_fidelity.py --call {args.call.name}` (CPU). The call: "
             f"{meta['card']}, {meta['date']}, commit {meta['commit']}, {meta['model']}, {slo.name}, trace "
             f"{trace.name}, {flags['num_requests']} requests per run. Fitted on the {len(train)} step periods of "
             f"repeat {args.train_repeat}; scored and compared on the {len(test)} steps and the runs of the other "
             "repeats.", "",
             "## Per-step error on held-out steps, |observed period / predicted - 1|", "",
             "| profile | decode-only median | decode-only P90 | mixed median | mixed P90 | steps (decode, mixed) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, model in profiles.items():
        e = step_error(model, test)
        lines.append(f"| {name} | {e['decode'][0]:.1%} | {e['decode'][1]:.1%} | {e['mixed'][0]:.1%} | "
                     f"{e['mixed'][1]:.1%} | {e['decode'][2]}, {e['mixed'][2]} |")
    lines += ["", "## Simulated vs real P99, held-out repeats (real: their mean)", "",
              "| policy | qps | real runs | real P99 TTFT ms | real P99 TBT ms | " +
              " | ".join(f"{n}: sim P99 TTFT ms (real/sim) | {n}: sim P99 TBT ms (real/sim)" for n in columns) + " |",
              "|---|---:|---:|---:|---:|" + "---:|---:|" * len(columns)]
    for (policy, rate), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        real_ttft = float(np.mean([r["real"]["ttft"]["p99"] for r in group]))
        real_tbt = float(np.mean([r["real"]["tbt"]["p99"] for r in group]))
        workload = list(workload_from_flags(trace=trace, max_total_len=flags["max_total_len"], qps=rate,
                                            num_requests=flags["num_requests"], seed=flags["seed"]).generate())
        runs_of = [[(model, model)] for model in profiles.values()]
        runs_of.append([(served, ResampledNoise(served, ratios, seed)) for seed in NOISE_SEEDS])
        cells = []
        for variants in runs_of:
            p99 = np.mean([[sim.ttft.p99, sim.tbt.p99] for sim in (
                simulate(workload, config, make_policy(policy, slo, prior=prior, seed=flags["seed"]), truth,
                         num_kv_blocks=blocks, slo=slo_targets(slo), admission=flags["admission"])
                for prior, truth in variants)], axis=0)
            cells.append(f"{p99[0] * 1e3:.0f} ({real_ttft / p99[0]:.2f}) | {p99[1] * 1e3:.1f} ({real_tbt / p99[1]:.2f})")
        lines.append(f"| {policy} | {rate:g} | {len(group)} | {real_ttft * 1e3:.0f} | {real_tbt * 1e3:.1f} | "
                     + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    if args.results is not None:
        args.results.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
