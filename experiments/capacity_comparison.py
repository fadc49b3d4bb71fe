"""Capacity of every scheduler and budget policy on llama-3-8b / H100, simulated.

Capacity (Sarathi-Serve's definition, see adaptive_sarathi.capacity): the highest mean request rate
at which P99 TBT <= the SLO's TBT target and the median scheduling delay <= 2 s. Compared:

  vllm       the vllm scheduler (prefill-prioritizing, whole prompts), budget 4096
  orca       the orca scheduler (hybrid batches, whole prompts), budget 4096
  fixed:B    sarathi with a fixed budget B in 256 / 512 / 1024 / 2048 / 4096
  two_level, slack, adaptive   sarathi with the budget controllers

on sharegpt_8k and arxiv_4k (Poisson arrivals) under the llama-3-8b-h100-strict and -relaxed SLO
policies, and on two phased workloads of chat (sharegpt_8k) and summarization (arxiv_4k) traffic,
each chat phase at the best fixed budget's capacity on sharegpt_8k and each summarization phase at
(a multiple of) its capacity on arxiv_4k (see PHASED):

  phased   chat and summarization alternating, four phases of num_requests / 2 requests each;
  burst    chat (3/8 of num_requests) then a summarization burst (1/8) at twice the
           summarization capacity, twice.

On each, `oracle:A/B` is a hindsight reference, not a policy: fixed A from the moment the first
chat request of a phase arrives, B from the first summarization request, A and B the best
stationary fixed budgets of the two traces. No policy that switches budgets at phase changes can
be expected to beat it by much. The latency model is the h100:llama-3-8b roofline unless
--profile gives a measured CSV.

The capacity search stops when its bracket is within REL_TOL (1%): a ratio of two capacities is
then known within about 1%, fine enough to judge a 0.97x target (3% was not).

Prints a markdown table as it goes. The full mode also writes experiments/results/
capacity_comparison.md (table and a verdict per target of the issue; a hand-written "## Analysis"
section already at its end is kept) and three figures: capacity bars, TBT CDFs at a common rate,
and the adaptive budget over time on the phased workloads. --smoke: a short run on one workload and
two configs, and the burst workload with fixed:1024 and its oracle, printing only.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from adaptive_sarathi.capacity import CapacityResult, find_capacity
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.engine.simulator import SimulationResult, simulate
from adaptive_sarathi.engine.stats import EngineState
from adaptive_sarathi.scenario import Scenario, default_kv_blocks, latency_model, slo_targets
from adaptive_sarathi.workloads import (SHARED_TRACES, ArrivalProcess, LogNormal, Phase, SyntheticLengths, TraceLengths,
                                       WorkloadSpec, single_phase)

RESULTS = Path(__file__).parent / "results"
TRACES = ("sharegpt_8k", "arxiv_4k")
SLOS = {"strict": "llama-3-8b-h100-strict", "relaxed": "llama-3-8b-h100-relaxed"}
FIXED = (256, 512, 1024, 2048, 4096)
# (label, scheduler, policy spec)
CONFIGS = ([("vllm", "vllm", "fixed:4096"), ("orca", "orca", "fixed:4096")]
           + [(f"fixed:{b}", "sarathi", f"fixed:{b}") for b in FIXED]
           + [("two_level", "sarathi", "two_level"), ("slack", "sarathi", "slack"), ("adaptive", "sarathi", "adaptive")])
PHASED_CONFIGS = [c for c in CONFIGS if c[0].startswith("fixed:") or c[0] == "adaptive"]
BLOCK_SIZE, MAX_MODEL_LEN = 16, 8192
REL_TOL = 0.01
SMOKE_REL_TOL = 0.05  # --smoke checks that everything runs, not the numbers
# Phased workloads: name -> (requests of a chat phase, of a summarization phase, as fractions of
# num_requests; summarization rate as a multiple of its trace's capacity). Each is two (chat,
# summarization) pairs. "phased": phases long enough (17-20 s at capacity) for the KV cache to
# fill and settle in each (it takes about 15 s from idle), as traffic that shifts over minutes
# does. "burst": chat traffic interrupted by a client submitting a batch of documents at twice the
# rate the server can summarize.
PHASED = {"phased": (1 / 2, 1 / 2, 1.0), "burst": (3 / 8, 1 / 8, 2.0)}


# Stand-ins with each trace's median prompt and output lengths, for machines without the traces.
SYNTHETIC_STAND_INS = {
    "sharegpt_8k": SyntheticLengths(LogNormal(1730, 0.9, max=7000), LogNormal(415, 0.7, max=1024)),
    "arxiv_4k": SyntheticLengths(LogNormal(2730, 0.25, max=4000), LogNormal(167, 0.8, max=1024)),
}


def trace_lengths(trace: str):
    """The trace's lengths, or its synthetic stand-in (with a note) when the file is absent."""
    path = SHARED_TRACES / f"{trace}.csv"
    if path.is_file():
        return TraceLengths(path)
    print(f"note: {path} not found: using synthetic lengths with its median prompt and output lengths", flush=True)
    return SYNTHETIC_STAND_INS[trace]


@dataclass
class Row:
    workload: str
    slo: str
    config: str
    result: CapacityResult

    @property
    def capacity(self) -> float:
        return self.result.capacity_qps

    @property
    def tbt_p99_ms(self) -> float:
        """P99 TBT of the probe at the claimed capacity (NaN when capacity is 0)."""
        at = [p for p in self.result.probes if p.qps_scale == self.result.capacity_scale]
        return at[0].tbt_p99_s * 1e3 if at else float("nan")


class Experiment:
    def __init__(self, args: argparse.Namespace):
        self.model = latency_model(args.profile, None if args.profile else "h100:llama-3-8b")
        self.num_kv_blocks = default_kv_blocks(self.model, BLOCK_SIZE)
        self.n, self.seed = args.num_requests, args.seed
        self.rel_tol = SMOKE_REL_TOL if args.smoke else REL_TOL
        self.slos = {name: load_slo_policy(spec) for name, spec in SLOS.items()}
        self.rows: list[Row] = []

    def scenario(self, workload: WorkloadSpec, scheduler: str, policy: str, slo: str) -> Scenario:
        config = SchedulerConfig(name=scheduler, max_model_len=MAX_MODEL_LEN, block_size=BLOCK_SIZE)
        return Scenario(workload, config, policy, self.model, self.num_kv_blocks, self.slos[slo], self.seed)

    def stationary(self, trace: str, qps: float = 1.0) -> WorkloadSpec:
        return single_phase(trace_lengths(trace), qps, num_requests=self.n, seed=self.seed)

    def phased(self, kind: str, chat_qps: float, summary_qps: float) -> WorkloadSpec:
        """The PHASED workload `kind`: chat phases at chat_qps, summarization phases at
        summary_qps x its rate multiple; phase k is chat for even k."""
        chat_share, summary_share, burst = PHASED[kind]
        chat, summary = (trace_lengths(t) for t in TRACES)
        pair = [Phase(chat, ArrivalProcess(chat_qps), num_requests=max(1, round(self.n * chat_share))),
                Phase(summary, ArrivalProcess(burst * summary_qps), num_requests=max(1, round(self.n * summary_share)))]
        return WorkloadSpec(tuple(pair * 2), self.seed)

    def oracle(self, name: str, workload: WorkloadSpec, slo: str, budgets: tuple[int, int],
               start_scale: float) -> Row:
        """The per-phase oracle's capacity on `workload` (chat phases get budgets[0], the others
        budgets[1]); printed and kept like measure()'s rows."""
        base = self.scenario(workload, "sarathi", "fixed:512", slo)
        result = find_capacity(OracleScenario(base, budgets * (len(workload.phases) // 2)),
                               start_scale=start_scale, rel_tol=self.rel_tol)
        row = Row(name, slo, "oracle:" + "/".join(map(str, budgets)), result)
        self.rows.append(row)
        print(f"| {name} | {slo} | {row.config} | {row.capacity:.2f} | {row.tbt_p99_ms:.1f} | "
              f"{self.slos[slo].tbt.target_s * 1e3:g} | {len(result.probes)} |", flush=True)
        return row

    def measure(self, name: str, workload: WorkloadSpec, slo: str, configs, start_qps: float) -> list[Row]:
        rows = []
        for label, scheduler, policy in configs:
            # Start each search near the last capacity found: fewer doublings to bracket it.
            start = start_qps / workload.mean_qps
            result = find_capacity(self.scenario(workload, scheduler, policy, slo), start_scale=start,
                                   rel_tol=self.rel_tol)
            row = Row(name, slo, label, result)
            rows.append(row)
            self.rows.append(row)
            if result.capacity_qps > 0:
                start_qps = result.capacity_qps
            print(f"| {name} | {slo} | {label} | {row.capacity:.2f} | {row.tbt_p99_ms:.1f} | "
                  f"{self.slos[slo].tbt.target_s * 1e3:g} | {len(result.probes)} |", flush=True)
        return rows


class PhaseOracle(BudgetPolicy):
    """Not a deployable policy: a hindsight reference. It knows when each phase's requests start arriving
    (`switch_times_s`, ascending) and uses that phase's best fixed budget (`budgets`, one per
    phase) from then on: what a controller that recognised every phase change instantly and
    knew the hindsight-best budget for it would do."""

    def __init__(self, switch_times_s: tuple[float, ...], budgets: tuple[int, ...], seed: int = 0):
        self.switch_times_s = switch_times_s
        self.budgets = budgets
        self.seed = seed

    def decide(self, state: EngineState) -> StepBudget:
        phase = max(0, bisect.bisect_right(self.switch_times_s, state.now_s) - 1)
        return StepBudget(self.budgets[phase])


@dataclass(frozen=True)
class OracleScenario:
    """A Scenario stand-in (what find_capacity needs: workload, slo, run) whose policy is the
    PhaseOracle with the phase start times of the workload at each rate."""

    base: Scenario
    budgets: tuple[int, ...]

    @property
    def workload(self) -> WorkloadSpec:
        return self.base.workload

    @property
    def slo(self):
        return self.base.slo

    def run(self, qps_scale: float = 1.0) -> SimulationResult:
        requests = self.base.workload.scaled(qps_scale).generate()
        sizes = [p.num_requests for p in self.base.workload.phases]
        starts = tuple(requests[sum(sizes[:k])].arrival_time_s for k in range(len(sizes)))
        b = self.base
        return simulate(requests, b.scheduler, PhaseOracle(starts, self.budgets), b.latency_model,
                        num_kv_blocks=b.num_kv_blocks, slo=slo_targets(b.slo))


def best_fixed(rows: list[Row]) -> Row:
    return max((r for r in rows if r.config.startswith("fixed:")), key=lambda r: r.capacity)


def by(rows: list[Row], config: str) -> Row:
    return next(r for r in rows if r.config == config)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def tbt_gaps(result) -> np.ndarray:
    return np.concatenate([np.diff(t.token_times) for t in result.timelines if len(t.token_times) > 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="150 requests, sharegpt_8k strict, fixed:512 and "
                                                             "adaptive; prints only (for CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-requests", type=int, default=None, help="requests per simulation (default 600; "
                                                                       "smoke: 150)")
    parser.add_argument("--profile", default=None, help="measured latency profile CSV (default: h100:llama-3-8b "
                                                         "roofline)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the results file and figures")
    args = parser.parse_args()
    args.num_requests = args.num_requests or (150 if args.smoke else 600)
    wall = time.perf_counter()
    exp = Experiment(args)
    card = "H100 roofline model (simulated)" if args.profile is None else f"profile {args.profile} (simulated)"
    header = ("| workload | SLO | config | capacity qps | P99 TBT ms at capacity | TBT SLO ms | probes |\n"
              "|---|---|---|---:|---:|---:|---:|")
    print(f"{card}; {args.num_requests} requests per simulation, seed {args.seed}, search tolerance {exp.rel_tol:.0%}")
    print(header, flush=True)

    if args.smoke:
        rows = exp.measure("sharegpt_8k", exp.stationary("sharegpt_8k"), "strict",
                           [c for c in CONFIGS if c[0] in ("fixed:512", "adaptive")], start_qps=4.0)
        print(f"\nadaptive / best fixed: {ratio(by(rows, 'adaptive').capacity, best_fixed(rows).capacity):.2f}")
        workload = exp.phased("burst", 4.0, 4.0)
        fixed = exp.measure("burst", workload, "strict", [c for c in CONFIGS if c[0] == "fixed:1024"], start_qps=4.0)
        oracle = exp.oracle("burst", workload, "strict", (1024, 2048), fixed[0].result.capacity_scale)
        print(f"\nper-phase oracle / fixed:1024: {ratio(oracle.capacity, fixed[0].capacity):.2f}")
        print(f"wall time {time.perf_counter() - wall:.1f} s")
        return

    stationary: dict[tuple[str, str], list[Row]] = {}
    for slo in SLOS:
        for trace in TRACES:
            stationary[trace, slo] = exp.measure(trace, exp.stationary(trace), slo, CONFIGS, start_qps=4.0)
    phased: dict[tuple[str, str], list[Row]] = {}
    phased_specs: dict[tuple[str, str], WorkloadSpec] = {}
    oracles: dict[tuple[str, str], Row] = {}
    for kind in PHASED:
        for slo in SLOS:
            chat, summary = (best_fixed(stationary[t, slo]).capacity for t in TRACES)
            spec = phased_specs[kind, slo] = exp.phased(kind, chat, summary)
            phased[kind, slo] = exp.measure(kind, spec, slo, PHASED_CONFIGS, start_qps=min(chat, summary))
            # Hindsight reference for a phase-switching controller: each phase's best stationary
            # fixed budget from the moment its requests start arriving.
            budgets = tuple(int(best_fixed(stationary[t, slo]).config.split(":")[1]) for t in TRACES)
            oracles[kind, slo] = exp.oracle(kind, spec, slo, budgets,
                                            best_fixed(phased[kind, slo]).result.capacity_scale or 1.0)

    ratios = ["", "| ratio | workload | SLO | value |", "|---|---|---|---:|"]
    for (trace, slo), rows in stationary.items():
        ratios.append(f"| adaptive / best fixed ({best_fixed(rows).config}) | {trace} | {slo} | "
                      f"{ratio(by(rows, 'adaptive').capacity, best_fixed(rows).capacity):.2f} |")
    for (kind, slo), rows in phased.items():
        oracle = oracles[kind, slo]
        ratios.append(f"| adaptive / best fixed ({best_fixed(rows).config}) | {kind} | {slo} | "
                      f"{ratio(by(rows, 'adaptive').capacity, best_fixed(rows).capacity):.2f} |")
        ratios.append(f"| per-phase oracle ({oracle.config}) / best fixed ({best_fixed(rows).config}) | {kind} | "
                      f"{slo} | {ratio(oracle.capacity, best_fixed(rows).capacity):.2f} |")
    for trace in TRACES:
        rows = stationary[trace, "strict"]
        ratios.append(f"| sarathi best fixed ({best_fixed(rows).config}) / vllm | {trace} | strict | "
                      f"{ratio(best_fixed(rows).capacity, by(rows, 'vllm').capacity):.2f} |")
    print("\n".join(ratios), flush=True)

    targets = verdicts(exp, stationary, phased)
    print("\n" + "\n".join(targets), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    figures(exp, stationary, phased, oracles, phased_specs, args.out)
    runtime = time.perf_counter() - wall
    table = [header] + [f"| {r.workload} | {r.slo} | {r.config} | {r.capacity:.2f} | {r.tbt_p99_ms:.1f} | "
                        f"{exp.slos[r.slo].tbt.target_s * 1e3:g} | {len(r.result.probes)} |" for r in exp.rows]
    shares = {kind: f"{round(args.num_requests * c)}" for kind, (c, _, _) in PHASED.items()}
    text = [
        "# Capacity comparison", "",
        f"Produced by `python experiments/capacity_comparison.py` on {date.today()}.", "",
        f"- Card: {card}", f"- Seed: {args.seed}", f"- Requests per simulation: {args.num_requests} (stationary "
        f"and burst), {2 * args.num_requests} (phased)",
        f"- KV cache: {exp.num_kv_blocks} blocks of {BLOCK_SIZE} tokens; max_num_seqs 256",
        f"- Search: find_capacity, relative tolerance {REL_TOL:.0%}; capacity = highest mean qps with P99 TBT <= "
        "the SLO's TBT target and median scheduling delay <= 2 s",
        f"- phased: 4 phases alternating sharegpt_8k (chat) and arxiv_4k (summarization), {shares['phased']} "
        "requests each, each phase's base rate = the best fixed budget's capacity on its trace under the same SLO",
        f"- burst: sharegpt_8k {shares['burst']} requests at its capacity, then arxiv_4k "
        f"{round(args.num_requests * PHASED['burst'][1])} requests at {PHASED['burst'][2]:g}x its capacity, "
        "twice",
        "- On both, capacity scales all phases by one factor (mean qps reported). oracle:A/B (not a deployable "
        "policy: it knows the phase boundaries) switches to each phase's best stationary fixed budget (A for "
        "sharegpt_8k, B for arxiv_4k) when the phase's first request arrives",
        f"- Runtime: {runtime / 60:.1f} min (one process)", "",
        "## Capacity", "", *table, *ratios, "", "## Targets", "", *targets, "",
        "Figures: capacity_bars.png, tbt_cdf.png, budget_over_time.png.", ""]
    path = args.out / "capacity_comparison.md"
    # Keep the hand-written analysis of an earlier run (it says which run it is about).
    old = path.read_text() if path.is_file() else ""
    analysis = old[old.index("## Analysis"):] if "## Analysis" in old else ""
    path.write_text("\n".join(text) + ("\n" + analysis if analysis else ""))
    print(f"wrote {args.out / 'capacity_comparison.md'} and figures; runtime {runtime / 60:.1f} min", file=sys.stderr)


def verdicts(exp: Experiment, stationary, phased) -> list[str]:
    out = []
    worst = min(((ratio(by(rows, "adaptive").capacity, best_fixed(rows).capacity), key)
                 for key, rows in stationary.items()), key=lambda x: x[0])
    met = worst[0] >= 0.97
    out.append(f"- adaptive >= 0.97x best fixed on every stationary workload: {'MET' if met else 'MISSED'} "
               f"(lowest {worst[0]:.2f} on {worst[1][0]} {worst[1][1]}"
               + ("" if met else f", {0.97 - worst[0]:.2f} short") + ")")
    for (kind, slo), rows in phased.items():
        r = ratio(by(rows, "adaptive").capacity, best_fixed(rows).capacity)
        out.append(f"- adaptive >= 1.2x best single fixed budget on the {kind} workload ({slo}): "
                   f"{'MET' if r >= 1.2 else 'MISSED'} ({r:.2f}" + ("" if r >= 1.2 else f", {1.2 - r:.2f} short") + ")")
    over = [r for r in exp.rows if r.capacity > 0 and not r.tbt_p99_ms <= exp.slos[r.slo].tbt.target_s * 1e3]
    zero = [r for r in exp.rows if r.capacity == 0]
    out.append(f"- P99 TBT within SLO wherever capacity is claimed: {'MET' if not over else 'MISSED'} "
               f"({len(exp.rows) - len(zero) - len(over)} of {len(exp.rows) - len(zero)} claimed capacities"
               + (f"; {len(zero)} configs with no passing rate: "
                  + ", ".join(f"{r.config} {r.workload} {r.slo}" for r in zero) if zero else "") + ")")
    for trace in TRACES:
        rows = stationary[trace, "strict"]
        r = ratio(best_fixed(rows).capacity, by(rows, "vllm").capacity)
        out.append(f"- sarathi fixed >= 2x vllm under the strict SLO ({trace}): {'MET' if r >= 2 else 'MISSED'} "
                   f"({r:.2f}" + ("" if r >= 2 else f", {2 - r:.2f} short") + ")")
    return out


def figures(exp: Experiment, stationary, phased, oracles, phased_specs, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(stationary.items()) + [(key, rows + [oracles[key]]) for key, rows in phased.items()]
    columns = len(stationary)
    fig, axes = plt.subplots(-(-len(panels) // columns), columns, figsize=(4 * columns, 4 * -(-len(panels) // columns)))
    axes = np.atleast_1d(axes).ravel()
    for ax, ((name, slo), rows) in zip(axes, panels):
        colors = ["tab:green" if r.config == "adaptive" else "tab:gray" if r.config in ("vllm", "orca")
                  else "tab:orange" if r.config.startswith("oracle:") else "tab:blue" for r in rows]
        ax.bar([r.config for r in rows], [r.capacity for r in rows], color=colors)
        ax.set_title(f"{name}, {slo}")
        ax.tick_params(axis="x", rotation=70)
        ax.set_ylabel("capacity (qps)")
    fig.tight_layout()
    fig.savefig(out / "capacity_bars.png", dpi=120)
    plt.close(fig)

    # TBT CDFs on sharegpt_8k strict at the lowest capacity of the three (all meet the SLO there).
    rows = stationary["sharegpt_8k", "strict"]
    chosen = [by(rows, "adaptive"), best_fixed(rows), by(rows, "vllm")]
    qps = min(r.capacity for r in chosen if r.capacity > 0)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in chosen:
        scheduler, policy = next((s, p) for label, s, p in CONFIGS if label == row.config)
        result = exp.scenario(exp.stationary("sharegpt_8k", qps), scheduler, policy, "strict").run()
        gaps = np.sort(tbt_gaps(result)) * 1e3
        ax.plot(gaps, np.arange(1, len(gaps) + 1) / len(gaps), label=row.config)
    ax.axvline(exp.slos["strict"].tbt.target_s * 1e3, color="k", ls="--", lw=0.8, label="TBT SLO")
    ax.set_xscale("log")
    ax.set_xlabel("time between tokens (ms)")
    ax.set_ylabel("CDF")
    ax.set_title(f"sharegpt_8k, strict SLO, {qps:.2f} qps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tbt_cdf.png", dpi=120)
    plt.close(fig)

    # The adaptive budget over time on the phased workloads at adaptive's capacity.
    fig, axes = plt.subplots(len(phased), 1, figsize=(8, 3 * len(phased)))
    for ax, ((kind, slo), rows) in zip(np.atleast_1d(axes), phased.items()):
        row = by(rows, "adaptive")
        workload = phased_specs[kind, slo].scaled(max(row.result.capacity_scale, 1e-6))
        result = exp.scenario(workload, "sarathi", "adaptive", slo).run(record_steps=True)
        t = np.array([s.start_time_s for s in result.steps])
        ax.plot(t, [s.token_budget for s in result.steps], lw=0.6, label="adaptive budget")
        ax.plot(t, [s.num_tokens for s in result.steps], lw=0.4, alpha=0.5, label="tokens scheduled")
        arrivals = [r.arrival_time_s for r in workload.generate()]
        first = np.cumsum([p.num_requests for p in workload.phases])[:-1]
        for k in first:
            ax.axvline(arrivals[k], color="k", ls=":", lw=0.8)
        # Once nothing waits (and in the first steps, before any decode) the budget is the max
        # bound, thousands of tokens nobody uses: keep the scale of the busy period.
        ax.set_ylim(0, 1.3 * np.percentile([s.num_tokens for s in result.steps], 99))
        ax.set_title(f"{kind}, {slo} SLO, {row.capacity:.2f} qps (phases: sharegpt, arxiv, sharegpt, arxiv)",
                     fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("tokens")
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "budget_over_time.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
