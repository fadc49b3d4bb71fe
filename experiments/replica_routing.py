"""Simulated SLO capacity of N engine replicas behind a router, per routing policy.

Every replica is the engine the single-replica simulator runs (sarathi scheduler, the adaptive
budget policy, its own KV cache) on the calibrated latency model; a router places each request
when it arrives (engine/routing.py: round_robin, least_outstanding, headroom). The figure is the
SLO capacity (adaptive_sarathi.capacity): the highest mean Poisson rate at which every declared
target holds at its percentile, per class where the policy has classes. A request headroom
refuses (no replica is forecast to meet its TTFT target) counts as one that missed.

Workloads:
  sharegpt_8k  the chat trace, Poisson, SLO policy llama-3-8b-h100-strict (TTFT P90 2 s, TBT P99 65 ms)
  mixed        examples/workloads/chat_and_batch.yaml (3/4 sharegpt_8k chat in class interactive,
               1/4 arxiv_4k summaries in class batch), SLO policy llama-3-8b-h100-tiered
               (interactive TTFT P90 1 s, TBT P99 65 ms; batch TTFT P90 30 s, TBT P99 325 ms)

Each simulation holds PER_REPLICA requests per replica, so every replica count sees the same
load per replica; the search for N replicas starts at N x the last per-replica capacity found
(few doublings to bracket it). Targets (issue 17): headroom >= 1.15x round robin and >= 1.05x
least-outstanding on mixed at 16 replicas; capacity within 5% of linear from 4 to 64 replicas.

Latency model: the H200 llama-3-8b profile fitted from served steps
(experiments/profiles/h200_llama-3-8b_served_periods_2026-12-03.csv) when present, else the
h100:llama-3-8b roofline; the results file says which. Full mode writes
experiments/results/replica_routing.md; --smoke runs 2 replicas, a few requests, a coarse
tolerance, the mixed workload only, and prints only.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from adaptive_sarathi.capacity import find_capacity
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.routing import POLICIES
from adaptive_sarathi.scenario import Scenario, default_kv_blocks, latency_model
from adaptive_sarathi.workloads import SHARED_TRACES, TraceLengths, WorkloadSpec, single_phase
# A sibling module: a script run from experiments/ imports it from its own folder.
from trace_stand_ins import workload_file

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
H200_PROFILE = ROOT / "profiles" / "h200_llama-3-8b_served_periods_2026-12-03.csv"
MIXED = ROOT.parent / "examples" / "workloads" / "chat_and_batch.yaml"
SLOS = {"sharegpt_8k": "llama-3-8b-h100-strict", "mixed": "llama-3-8b-h100-tiered"}
BLOCK_SIZE, MAX_MODEL_LEN = 16, 8192
SEED = 0


def workload(name: str, num_requests: int, qps: float) -> WorkloadSpec:
    """`num_requests` requests of workload `name` at mean rate `qps`."""
    if name == "sharegpt_8k":
        return single_phase(TraceLengths(SHARED_TRACES / "sharegpt_8k.csv"), qps, num_requests=num_requests,
                            seed=SEED)
    spec = workload_file(MIXED, seed=SEED)
    (phase,) = spec.phases
    return replace(spec, phases=(replace(phase, num_requests=num_requests, arrivals=replace(phase.arrivals, qps=qps)),))


def scenario(name: str, replicas: int, routing: str, per_replica: int, qps: float, model,
             num_kv_blocks: int) -> Scenario:
    """`replicas` adaptive sarathi engines behind `routing`, serving workload `name` at `qps`."""
    return Scenario(workload(name, per_replica * replicas, qps),
                    SchedulerConfig(name="sarathi", max_model_len=MAX_MODEL_LEN, block_size=BLOCK_SIZE),
                    "adaptive", model, num_kv_blocks, slo=load_slo_policy(SLOS[name]), seed=SEED,
                    replicas=replicas, routing=routing)


def rejected_share(s: Scenario) -> float:
    """The share of requests the router refuses at the scenario's rate (one more simulation)."""
    r = s.run()
    return r.num_refused / (r.num_requests + r.num_refused)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 replicas, few requests, print only")
    parser.add_argument("--replicas", default="4,16,64", help="comma-separated replica counts")
    parser.add_argument("--workloads", default="mixed,sharegpt_8k")
    parser.add_argument("--routing", default=",".join(POLICIES))
    parser.add_argument("--per-replica", type=int, default=100, help="requests per replica per simulation")
    parser.add_argument("--tolerance", type=float, default=0.04, help="capacity search's relative tolerance")
    parser.add_argument("--start-qps", type=float, default=20.0, help="per-replica rate the first search starts at")
    parser.add_argument("--out", type=Path, default=RESULTS / "replica_routing.md")
    parser.add_argument("--probe-qps", type=float, default=None, metavar="QPS",
                        help="instead of searching: one simulation per --routing policy and --replicas count at QPS "
                             "per replica (e.g. 0.95 x the per-replica capacity found at 4: does the SLO hold at "
                             "95%% of linear scaling?); prints and appends a table to --out")
    args = parser.parse_args(argv)
    if args.smoke:  # checks that everything runs, not the numbers
        args.replicas, args.per_replica, args.tolerance, args.workloads = "2", 20, 0.3, "mixed"
        args.start_qps = 25.0
    counts = [int(n) for n in args.replicas.split(",")]
    names = args.workloads.split(",")
    policies = args.routing.split(",")
    for n in names:
        if n not in SLOS:
            parser.error(f"--workloads: {n!r} is unknown: use {', '.join(SLOS)}")
    for p in policies:
        if p not in POLICIES:
            parser.error(f"--routing: {p!r} is unknown: use {', '.join(POLICIES)}")
    if H200_PROFILE.exists():
        model, model_name = latency_model(profile=H200_PROFILE), f"profile {H200_PROFILE.relative_to(ROOT.parent)}"
    else:
        model, model_name = latency_model(roofline="h100:llama-3-8b"), "roofline h100:llama-3-8b"
    kv = default_kv_blocks(model, BLOCK_SIZE)
    if args.probe_qps is not None:
        return probe(names, counts, policies, args, model, kv)
    started = time.perf_counter()
    rows: list[dict] = []
    header = ("| workload | replicas | routing | SLO capacity qps | per replica | / round_robin | / least_outstanding "
              "| / linear from first | refused at capacity | probes | search s |")
    print(header + "\n|" + "---|" * 11, flush=True)
    for name in names:
        per_replica_qps = args.start_qps
        for count in counts:
            found: dict[str, float] = {}
            for routing in policies:
                result = find_capacity(scenario(name, count, routing, args.per_replica, per_replica_qps * count,
                                                model, kv), rel_tol=args.tolerance, slo_only=True)
                found[routing] = qps = result.slo_capacity_qps
                refused = (rejected_share(scenario(name, count, routing, args.per_replica, qps, model, kv))
                           if routing == "headroom" and qps > 0 else 0.0)
                first = next((r for r in rows if r["workload"] == name and r["routing"] == routing), None)
                row = dict(workload=name, replicas=count, routing=routing, qps=qps, per=qps / count,
                           vs_rr=_ratio(qps, found.get("round_robin")), vs_lor=_ratio(qps, found.get("least_outstanding")),
                           linear=_ratio(qps / count, first["per"]) if first else None, refused=refused,
                           probes=len(result.probes), search_s=result.wall_time_s)
                rows.append(row)
                print(_line(row), flush=True)
                if not args.smoke:  # rewritten after every row: a long run that is stopped keeps its rows
                    args.out.write_text(_report(rows, args, model_name, kv, time.perf_counter() - started, header))
            per_replica_qps = max(found.values()) / count if max(found.values()) > 0 else per_replica_qps
    if not args.smoke:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def probe(names: list[str], counts: list[int], policies: list[str], args, model, kv: int) -> int:
    """One simulation per (workload, count, policy) at args.probe_qps per replica: whether every
    class meets its targets there, and each class's TTFT and TBT at its percentiles."""
    lines = ["", f"## Probes at {args.probe_qps:g} qps per replica ({date.today()}, {args.per_replica} requests per "
                 "replica)", "", "| workload | replicas | routing | qps | every class met | refused | per class: TTFT p s "
                 "(target), TBT p ms (target) | host s |", "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    if not args.smoke:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    for name in names:
        for count in counts:
            for routing in policies:
                start = time.perf_counter()
                s = scenario(name, count, routing, args.per_replica, args.probe_qps * count, model, kv)
                r = s.run()
                per = "; ".join(f"{c}: {v.ttft_p_s:.2f} ({v.targets.ttft_s:g}), {1000 * v.tbt_p_s:.0f} "
                                f"({1000 * v.targets.tbt_s:.0f})" for c, v in r.slo.per_class.items()) or (
                    f"{r.slo.ttft_p_s:.2f} ({r.slo.targets.ttft_s:g}), {1000 * r.slo.tbt_p_s:.0f} "
                    f"({1000 * r.slo.targets.tbt_s:.0f})")
                line = (f"| {name} | {count} | {routing} | {args.probe_qps * count:.1f} | "
                        f"{'yes' if r.slo.percentiles_met else 'no'} | "
                        f"{r.num_refused / (r.num_requests + r.num_refused):.1%} | {per} | "
                        f"{time.perf_counter() - start:.0f} |")
                print(line, flush=True)
                if not args.smoke:
                    with open(args.out, "a") as f:
                        f.write(line + "\n")
    return 0


def _ratio(a: float, b: float | None) -> float | None:
    return a / b if b else None


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec)


def _line(r: dict) -> str:
    return (f"| {r['workload']} | {r['replicas']} | {r['routing']} | {r['qps']:.1f} | {r['per']:.2f} | "
            f"{_fmt(r['vs_rr'])} | {_fmt(r['vs_lor'])} | {_fmt(r['linear'])} | {r['refused']:.1%} | "
            f"{r['probes']} | {r['search_s']:.0f} |")


def _verdicts(rows: list[dict]) -> list[str]:
    out = []

    def get(workload, count, routing):
        return next((r for r in rows if (r["workload"], r["replicas"], r["routing"]) == (workload, count, routing)),
                    None)

    h = get("mixed", 16, "headroom")
    if h is not None:
        for base, target in (("round_robin", 1.15), ("least_outstanding", 1.05)):
            b = get("mixed", 16, base)
            if b is not None and b["qps"] > 0:
                ratio = h["qps"] / b["qps"]
                out.append(f"- mixed, 16 replicas: headroom / {base} = {ratio:.2f}x (target >= {target}x): "
                           f"{'met' if ratio >= target else 'NOT met'}")
    for r in rows:
        if r["replicas"] == 64 and r["linear"] is not None:
            ok = abs(r["linear"] - 1.0) <= 0.05
            out.append(f"- {r['workload']}, {r['routing']}: per-replica capacity at 64 / at the first count = "
                       f"{r['linear']:.2f} (target within 5% of 1): {'met' if ok else 'NOT met'}")
    return out


def _report(rows: list[dict], args, model_name: str, kv: int, total_s: float, header: str) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
    except OSError:
        commit = "?"
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Routing across replicas: simulated SLO capacity per policy", "",
        f"Produced by `python experiments/replica_routing.py --replicas {args.replicas} --workloads {args.workloads} "
        f"--per-replica {args.per_replica} --tolerance {args.tolerance}` on {date.today()} (commit {commit}), "
        f"{cpu}, {platform.python_version()}, the shared 2-core CPU host; whole run {total_s / 60:.1f} min.", "",
        f"- Latency model: {model_name} (simulated; every replica the same model and {kv} KV blocks of "
        f"{BLOCK_SIZE} tokens)",
        "- Each replica: sarathi scheduler, adaptive budget policy; a router places each request on arrival",
        f"- Requests per simulation: {args.per_replica} per replica (kept modest: a 64-replica search is "
        "thousands of requests per probe on 2 cores), seed 0; search tolerance "
        f"{args.tolerance:.0%}", 
        "- sharegpt_8k: SLO llama-3-8b-h100-strict; mixed: chat_and_batch.yaml under llama-3-8b-h100-tiered "
        "(every class its own targets)",
        "- '/ linear from first': per-replica capacity at this count over that at the first count of the row's "
        "policy; 'refused at capacity': the share of requests headroom answered 429 at its capacity rate "
        "(counted as misses)", "",
        "## SLO capacity", "", header, "|" + "---|" * 11, *(_line(r) for r in rows), "",
        "## Against the targets", "", *_verdicts(rows), "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
