"""SLO classes on one replica: SLO capacity per budget policy on mixed-class workloads, simulated.

Two workloads, each judged by an SLO policy whose classes hold each request to its own targets:

  chat_and_batch    examples/workloads/chat_and_batch.yaml, policy llama-3-8b-h100-tiered:
                    3/4 chat (sharegpt_8k, `interactive`: TTFT P90 1 s, TBT P99 65 ms) and 1/4
                    summaries (arxiv_4k, `batch`: TTFT P90 30 s, TBT P99 325 ms);
  chat_code_batch   examples/workloads/chat_code_batch.yaml, policy llama-3-8b-h100-three-tier:
                    as above plus short code completions (`code`: TTFT P90 300 ms).

Policies (the sarathi scheduler in every case):
  fixed:B       a fixed budget B in BUDGETS, first come first served (Sarathi-Serve as published);
  fixed:B:edf   the same budget, requests ordered by their class's TTFT deadline;
  slack         the slack-based budget baseline;
  adaptive      the controller (deadline ordering, the TBT cap of the tightest running decode,
                admission: 429 for a request the queue due before it would make late);
  adaptive (no admission)   the same with every request queued: what admission control adds.

SLO capacity: the highest Poisson rate at which every class meets its own targets (TTFT at its
percentile over its requests, TBT over its token gaps), searched to --tolerance with the server's
admission control simulated (a request the policy refuses on arrival is a 429 and counts as a
miss). Only adaptive refuses; the others admit everything.

Overload: at 2x adaptive's SLO capacity, adaptive and the best fixed budgets (FCFS and edf) are
simulated once more: per class, the fraction of its requests refused, and the attainment of the
served ones (the requests meeting every target of their class); every request must be served or
refused (counted).

The latency model is a measured profile (--profile, default the H200 one committed on
2026-12-03). Writes experiments/results/slo_classes.md and slo_classes.png; --smoke runs a tiny
plan and prints only.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from adaptive_sarathi.capacity import find_capacity
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.scenario import Scenario, default_kv_blocks, latency_model
# A sibling module: a script run from experiments/ imports it from its own folder.
from trace_stand_ins import workload_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DEFAULT_PROFILE = ROOT / "experiments" / "profiles" / "h200_llama-3-8b_served_periods_2026-12-03.csv"
WORKLOADS = {
    "chat_and_batch": ("examples/workloads/chat_and_batch.yaml", "llama-3-8b-h100-tiered"),
    "chat_code_batch": ("examples/workloads/chat_code_batch.yaml", "llama-3-8b-h100-three-tier"),
}
BUDGETS = (256, 512, 1024, 1536, 2048, 4096)
TARGET_VS_FCFS, TARGET_VS_EDF = 1.5, 1.2
MAX_MODEL_LEN = 16384
NO_ADMISSION = " (no admission)"  # a policy label suffix: the same spec with every request queued


@dataclass(frozen=True)
class Row:
    workload: str
    policy: str
    slo_capacity_qps: float
    per_class_ttft_ms: dict[str, float]
    refused: tuple[int, int]  # (refused, requests) at the SLO capacity rate
    search_s: float
    num_sims: int


def policies(budgets) -> list[str]:
    return (["adaptive", "adaptive" + NO_ADMISSION, "slack"] + [f"fixed:{b}" for b in budgets]
            + [f"fixed:{b}:edf" for b in budgets])


def search(workload: str, spec, slo, model, blocks: int, policy: str, start_scale: float, tolerance: float,
           seed: int):
    scenario = Scenario(spec, SchedulerConfig(name="sarathi", max_model_len=MAX_MODEL_LEN),
                        policy.removesuffix(NO_ADMISSION), model, blocks, slo=slo, seed=seed,
                        admission=not policy.endswith(NO_ADMISSION))
    result = find_capacity(scenario, start_scale=start_scale, rel_tol=tolerance, slo_only=True)
    at = result.per_class.values()
    ttft = {name: c.ttft_p_s * 1e3 for name, c in result.per_class.items()}
    refused = (sum(c.num_refused for c in at), sum(c.num_requests for c in at))
    return scenario, result, Row(workload, policy, result.slo_capacity_qps, ttft, refused, result.wall_time_s,
                                 len(result.probes))


def overload(scenario: Scenario, policy: str, scale: float) -> dict[str, tuple[int, int, float]]:
    """Per class at `scale` x the workload's rate: (requests, refused, attainment of the served)."""
    r = replace(scenario, policy=policy).run(scale)
    out = {}
    for name, c in r.slo.per_class.items():
        served = c.num_requests - c.num_refused
        met = round(c.attainment * c.num_requests)  # refused requests never meet a target
        out[name] = (c.num_requests, c.num_refused, met / served if served else float("nan"))
    total = sum(v[0] for v in out.values())
    assert total == r.num_requests + r.num_refused, "a request was neither served nor refused"
    return out


def best(rows: list[Row], edf: bool) -> Row:
    fixed = [r for r in rows if r.policy.startswith("fixed:") and r.policy.endswith(":edf") == edf]
    return max(fixed, key=lambda r: r.slo_capacity_qps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="latency profile CSV")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of " + ", ".join(WORKLOADS))
    p.add_argument("--num-requests", type=int, default=None, help="requests per workload (default: the file's)")
    p.add_argument("--tolerance", type=float, default=0.05, help="relative precision of each capacity search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="one workload, 40 requests, three policies; print only")
    args = p.parse_args(argv)
    names = args.workloads.split(",")
    budgets = BUDGETS
    if args.smoke:
        names, args.num_requests, args.tolerance, budgets = names[:1], 40, 0.25, (1024,)
    model = latency_model(args.profile)
    blocks = default_kv_blocks(model, 16)
    started = time.perf_counter()
    rows: list[Row] = []
    overloads: dict[str, dict[str, dict]] = {}
    for name in names:
        path, slo_name = WORKLOADS[name]
        spec = workload_file(ROOT / path, seed=args.seed)
        if args.num_requests is not None:
            spec = spec.with_requests_per_phase(args.num_requests)
        slo = load_slo_policy(slo_name)
        scale, mine, scenario = 1.0, [], None
        for policy in policies(budgets):
            scenario_p, result, row = search(name, spec, slo, model, blocks, policy, scale, args.tolerance, args.seed)
            if policy == "adaptive":
                scenario, adaptive_scale = scenario_p, result.slo_capacity_scale
            scale = result.slo_capacity_scale or 1.0
            mine.append(row)
            print(f"{name} {policy}: SLO capacity {row.slo_capacity_qps:.2f} qps ({row.num_sims} simulations, "
                  f"{row.search_s:.0f} s)", flush=True)
        rows += mine
        overloads[name] = {policy: overload(scenario, policy, 2 * adaptive_scale)
                           for policy in ("adaptive", best(mine, edf=False).policy, best(mine, edf=True).policy)}
    wall = time.perf_counter() - started
    report = render(rows, overloads, names, args, blocks, wall)
    print(report)
    if not args.smoke:
        RESULTS.joinpath("slo_classes.md").write_text(report)
        plot(rows, names, RESULTS / "slo_classes.png")
    return 0


def render(rows: list[Row], overloads, names, args, blocks: int, wall_s: float) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip() or "unknown"
    lines = ["# SLO classes on one replica, simulated", "",
             f"Produced by `python experiments/slo_classes.py` on {date.today()}, commit {commit}, on "
             f"{platform.machine()} ({platform.processor() or 'cpu'}), Python {platform.python_version()}; "
             f"whole run {wall_s / 60:.1f} min.", "",
             f"Latency model: `{Path(args.profile).relative_to(ROOT) if Path(args.profile).is_relative_to(ROOT) else args.profile}` "
             f"(measured), {blocks} KV blocks of 16 tokens. Search tolerance {args.tolerance:.0%}, seed {args.seed}, "
             "the server's admission control simulated (adaptive refuses on arrival what it cannot serve in time; a "
             "refusal is a miss). See the script's docstring for the workloads and policies.", ""]
    for name in names:
        mine = [r for r in rows if r.workload == name]
        fcfs, edf = best(mine, edf=False), best(mine, edf=True)
        adaptive = next(r for r in mine if r.policy == "adaptive")
        classes = sorted(adaptive.per_class_ttft_ms)
        lines += [f"## {name} ({WORKLOADS[name][1]})", "",
                  "| policy | SLO capacity (qps) | / best FCFS | / best edf | " +
                  " | ".join(f"{c} TTFT P90 there (ms)" for c in classes) + " | refused there | simulations | search (s) |",
                  "|---|---:|---:|---:|" + "---:|" * len(classes) + "---:|---:|---:|"]
        for r in mine:
            ttft = " | ".join(f"{r.per_class_ttft_ms[c]:.0f}" if c in r.per_class_ttft_ms else "-" for c in classes)
            lines.append(f"| {r.policy} | {r.slo_capacity_qps:.2f} | {r.slo_capacity_qps / fcfs.slo_capacity_qps:.2f} | "
                         f"{r.slo_capacity_qps / edf.slo_capacity_qps:.2f} | {ttft} | {r.refused[0]}/{r.refused[1]} | "
                         f"{r.num_sims} | {r.search_s:.0f} |")
        vs_fcfs, vs_edf = (adaptive.slo_capacity_qps / fcfs.slo_capacity_qps,
                           adaptive.slo_capacity_qps / edf.slo_capacity_qps)
        lines += ["", f"adaptive / best FCFS ({fcfs.policy}) = **{vs_fcfs:.2f}x** (target >= {TARGET_VS_FCFS}x: "
                      f"{'met' if vs_fcfs >= TARGET_VS_FCFS else 'missed'}); adaptive / best edf ({edf.policy}) = "
                      f"**{vs_edf:.2f}x** (target >= {TARGET_VS_EDF}x: {'met' if vs_edf >= TARGET_VS_EDF else 'missed'}).",
                  "", f"Overload at 2x adaptive's SLO capacity ({2 * adaptive.slo_capacity_qps:.2f} qps): per class, "
                      "requests refused (429) and the served requests meeting every target of their class.", "",
                  "| policy | " + " | ".join(f"{c}: refused | {c}: served attainment" for c in classes) + " |",
                  "|---|" + "---:|---:|" * len(classes)]
        for policy, per_class in overloads[name].items():
            cells = []
            for c in classes:
                n, refused, attained = per_class[c]
                cells.append(f"{refused}/{n} | {attained:.1%}")
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![SLO capacity per policy](slo_classes.png)", ""]
    return "\n".join(lines)


def plot(rows: list[Row], names, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in rows if r.workload == name]
        colors = ["tab:red" if r.policy.startswith("adaptive") else "tab:orange" if r.policy == "slack"
                  else "tab:green" if r.policy.endswith(":edf") else "tab:blue" for r in mine]
        ax.bar(range(len(mine)), [r.slo_capacity_qps for r in mine], color=colors)
        ax.set_xticks(range(len(mine)), [r.policy.removeprefix("fixed:") for r in mine], rotation=60, fontsize=8)
        ax.set_ylabel("SLO capacity (qps)")
        ax.set_title(f"{name}: blue FCFS, green edf")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
