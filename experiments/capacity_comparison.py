"""SLO capacity of every scheduler and budget policy on llama-3-8b / H100, simulated.

The figure (adaptive_sarathi.capacity, `slo_capacity_qps`): the SLO capacity, the highest mean
Poisson request rate at which every declared target of the SLO policy holds at its percentile:
the TTFT percentile over requests and the TBT percentile over every token gap of every request.
Beside it, labelled proxy, Sarathi-Serve's capacity (P99 TBT <= the TBT target and median
scheduling delay <= 2 s; it ignores the TTFT target), kept for comparison with the paper; both
come from the same simulations. Each row also gives its ratio to the best fixed budget's SLO
capacity on the same workload and SLO, and the host wall time of its search. Compared:

  vllm       the vllm scheduler (prefill-prioritizing, whole prompts), budget 4096
  orca       the orca scheduler (hybrid batches, whole prompts), budget 4096
  fixed:B    sarathi with a fixed budget B in FIXED (256 ... 8192)
  two_level, slack, adaptive   sarathi with the budget controllers

on sharegpt_8k and arxiv_4k (Poisson arrivals) under the llama-3-8b-h100-strict and -relaxed SLO
policies, and on two phased workloads of chat (sharegpt_8k) and summarization (arxiv_4k) traffic,
each chat phase at the best fixed budget's SLO capacity on sharegpt_8k and each summarization
phase at (a multiple of) its SLO capacity on arxiv_4k (see PHASED):

  phased   chat and summarization alternating, four phases of num_requests / 2 requests each;
  burst    chat (3/8 of num_requests) then a summarization burst (1/8) at twice the
           summarization capacity, twice.

On each, `oracle:A/B` is a hindsight reference, not a policy: fixed A from the moment the first
chat request of a phase arrives, B from the first summarization request, A and B the best
stationary fixed budgets of the two traces. The latency model is the h100:llama-3-8b roofline
unless --profile gives a measured CSV.

Cost: find_capacity shares simulations between its criteria, and each search starts at the
previous policy's SLO capacity on the same workload (fewer doublings to bracket it). The search
stops when its bracket is within REL_TOL (1%), fine enough to judge a 0.97x target.
--workloads and --slos pick a subset (the phased workloads need both traces under the same SLO).

Prints a markdown table as it goes. The full mode also writes experiments/results/
capacity_comparison.md (table, ratios and a verdict per target; a hand-written "## Analysis"
section already at its end is kept) and up to three figures: SLO capacity bars, TBT CDFs at a
common rate (needs sharegpt_8k strict), and the adaptive budget over time on the phased
workloads. --smoke: a short run on one workload and three configs, and the burst workload with
fixed:1024 and its oracle, printing only.
"""

from __future__ import annotations

import argparse
import bisect
import os
import platform
import subprocess
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
from adaptive_sarathi.workloads import SHARED_TRACES, ArrivalProcess, Phase, TraceLengths, WorkloadSpec, single_phase
# A sibling module: a script run from experiments/ imports it from its own folder.
from trace_stand_ins import SYNTHETIC_STAND_INS

RESULTS = Path(__file__).parent / "results"
TRACES = ("sharegpt_8k", "arxiv_4k")
SLOS = {"strict": "llama-3-8b-h100-strict", "relaxed": "llama-3-8b-h100-relaxed"}
FIXED = (256, 512, 768, 1024, 1536, 2048, 4096, 8192)
CONTROLLERS = ("two_level", "slack", "adaptive")
# (label, scheduler, policy spec)
CONFIGS = ([("vllm", "vllm", "fixed:4096"), ("orca", "orca", "fixed:4096")]
           + [(f"fixed:{b}", "sarathi", f"fixed:{b}") for b in FIXED]
           + [(c, "sarathi", c) for c in CONTROLLERS])
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
WORKLOADS = TRACES + tuple(PHASED)


def trace_lengths(trace: str):
    """The trace's lengths, or its synthetic stand-in (with a note) when the file is absent."""
    path = SHARED_TRACES / f"{trace}.csv"
    if path.is_file():
        return TraceLengths(path)
    print(f"note: {path} not found: using synthetic lengths with its median prompt and output lengths", flush=True)
    return SYNTHETIC_STAND_INS[trace]


@dataclass
class Row:
    """One capacity search: `config` on `workload` under `slo`. `best_fixed` (set once the
    workload's fixed budgets are all measured) is the best fixed budget's SLO capacity."""

    workload: str
    slo: str
    config: str
    result: CapacityResult
    best_fixed: float = float("nan")

    @property
    def capacity(self) -> float:
        """SLO capacity (qps), the figure compared."""
        return self.result.slo_capacity_qps

    @property
    def proxy(self) -> float:
        """Sarathi-Serve's capacity (qps), the proxy."""
        return self.result.capacity_qps

    def _at_capacity(self):
        at = [p for p in self.result.probes if p.qps_scale == self.result.slo_capacity_scale]
        return at[0] if at else None

    @property
    def ttft_ms(self) -> float:
        """TTFT at the SLO's percentile in the probe at the SLO capacity (NaN when it is 0)."""
        p = self._at_capacity()
        return p.ttft_p_s * 1e3 if p is not None else float("nan")

    @property
    def tbt_ms(self) -> float:
        """Per-gap TBT at the SLO's percentile in the probe at the SLO capacity (NaN when it is 0)."""
        p = self._at_capacity()
        return p.tbt_p_s * 1e3 if p is not None else float("nan")

    def line(self) -> str:
        r = self.result
        return (f"| {self.workload} | {self.slo} | {self.config} | {self.capacity:.2f} | "
                f"{_fmt(ratio(self.capacity, self.best_fixed))} | {self.ttft_ms:.0f} / {r.ttft_slo_s * 1e3:g} | "
                f"{self.tbt_ms:.1f} / {r.tbt_slo_s * 1e3:g} | {self.proxy:.2f} | {len(r.probes)} | "
                f"{r.wall_time_s:.0f} |")


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


HEADER = ("| workload | SLO | config | SLO capacity qps | / best fixed | TTFT ms at capacity / target | "
          "TBT ms at capacity / target | proxy qps | probes | search s |\n"
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|")


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
               start_scale: float, best_fixed: float = float("nan")) -> Row:
        """The per-phase oracle's capacities on `workload` (chat phases get budgets[0], the others
        budgets[1]); printed and kept like measure()'s rows."""
        base = self.scenario(workload, "sarathi", "fixed:512", slo)
        result = find_capacity(OracleScenario(base, budgets * (len(workload.phases) // 2)),
                               start_scale=start_scale, rel_tol=self.rel_tol)
        row = Row(name, slo, "oracle:" + "/".join(map(str, budgets)), result, best_fixed)
        self.rows.append(row)
        print(row.line(), flush=True)
        return row

    def measure(self, name: str, workload: WorkloadSpec, slo: str, configs, start_qps: float) -> list[Row]:
        """One search per config; each starts at the previous config's SLO capacity (fewer
        doublings to bracket it). Sets every row's best_fixed once all are measured."""
        rows, best = [], float("nan")
        for label, scheduler, policy in configs:
            result = find_capacity(self.scenario(workload, scheduler, policy, slo),
                                   start_scale=start_qps / workload.mean_qps, rel_tol=self.rel_tol)
            if label.startswith("fixed:"):
                best = max(best, result.slo_capacity_qps) if best == best else result.slo_capacity_qps
            # Printed with the best fixed budget so far (CONFIGS lists the fixed budgets before the
            # controllers); the final table has the ratio to the best of all of them.
            row = Row(name, slo, label, result, best)
            rows.append(row)
            self.rows.append(row)
            if result.slo_capacity_qps > 0:
                start_qps = result.slo_capacity_qps
            print(row.line(), flush=True)
        fixed = [r.capacity for r in rows if r.config.startswith("fixed:")]
        for row in rows:
            row.best_fixed = max(fixed) if fixed else float("nan")
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
                                                             "adaptive, then burst with fixed:1024 and its oracle; "
                                                             "prints only (for CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-requests", type=int, default=None, help="requests per simulation (default 600; "
                                                                       "smoke: 150)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)} (default all; phased and burst need "
                             "both traces)")
    parser.add_argument("--slos", default=",".join(SLOS), help=f"comma-separated subset of {','.join(SLOS)}")
    parser.add_argument("--configs", default=None,
                        help="comma-separated subset of the config labels (default all: "
                             + ", ".join(c[0] for c in CONFIGS) + "); oracles and ratios need fixed budgets")
    parser.add_argument("--profile", default=None, help="measured latency profile CSV (default: h100:llama-3-8b "
                                                         "roofline)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the results file and figures")
    args = parser.parse_args()
    args.num_requests = args.num_requests or (150 if args.smoke else 600)
    workloads, slos = _subset(args.workloads, WORKLOADS, "--workloads"), _subset(args.slos, tuple(SLOS), "--slos")
    configs = CONFIGS if args.configs is None else [
        next(c for c in CONFIGS if c[0] == label)
        for label in _subset(args.configs, tuple(c[0] for c in CONFIGS), "--configs")]
    if any(w in PHASED for w in workloads) and not all(t in workloads for t in TRACES):
        parser.error(f"--workloads {args.workloads}: the phased workloads take their rates from both traces' "
                     f"results: add {', '.join(TRACES)}")
    wall = time.perf_counter()
    exp = Experiment(args)
    card = "H100 roofline model (simulated)" if args.profile is None else f"profile {args.profile} (simulated)"
    print(f"{card}; {args.num_requests} requests per simulation, seed {args.seed}, search tolerance {exp.rel_tol:.0%}")
    print(HEADER, flush=True)

    if args.smoke:
        rows = exp.measure("sharegpt_8k", exp.stationary("sharegpt_8k"), "strict",
                           [c for c in CONFIGS if c[0] in ("fixed:512", "adaptive")], start_qps=4.0)
        print(f"\nadaptive / best fixed: {ratio(by(rows, 'adaptive').capacity, best_fixed(rows).capacity):.2f}")
        workload = exp.phased("burst", 4.0, 4.0)
        fixed = exp.measure("burst", workload, "strict", [c for c in CONFIGS if c[0] == "fixed:1024"], start_qps=4.0)
        oracle = exp.oracle("burst", workload, "strict", (1024, 2048), fixed[0].result.slo_capacity_scale or 1.0,
                            fixed[0].capacity)
        print(f"\nper-phase oracle / fixed:1024: {ratio(oracle.capacity, fixed[0].capacity):.2f}")
        print(f"wall time {time.perf_counter() - wall:.1f} s")
        return

    stationary: dict[tuple[str, str], list[Row]] = {}
    for slo in slos:
        for trace in (t for t in TRACES if t in workloads):
            stationary[trace, slo] = exp.measure(trace, exp.stationary(trace), slo, configs, start_qps=4.0)
    phased: dict[tuple[str, str], list[Row]] = {}
    phased_specs: dict[tuple[str, str], WorkloadSpec] = {}
    oracles: dict[tuple[str, str], Row] = {}
    for kind in (k for k in PHASED if k in workloads):
        for slo in slos:
            chat, summary = (best_fixed(stationary[t, slo]).capacity for t in TRACES)
            spec = phased_specs[kind, slo] = exp.phased(kind, chat, summary)
            rows = phased[kind, slo] = exp.measure(kind, spec, slo, [c for c in configs if c in PHASED_CONFIGS],
                                                   start_qps=min(chat, summary))
            # Hindsight reference for a phase-switching controller: each phase's best stationary
            # fixed budget from the moment its requests start arriving.
            budgets = tuple(int(best_fixed(stationary[t, slo]).config.split(":")[1]) for t in TRACES)
            oracles[kind, slo] = exp.oracle(kind, spec, slo, budgets,
                                            best_fixed(rows).result.slo_capacity_scale or 1.0, rows[0].best_fixed)

    ratios = ["| ratio (SLO capacity) | workload | SLO | value |", "|---|---|---|---:|"]
    for (name, slo), rows in [*stationary.items(), *phased.items()]:
        best = best_fixed(rows)
        for policy in ("adaptive",):
            if any(r.config == policy for r in rows):
                ratios.append(f"| {policy} / best fixed ({best.config}) | {name} | {slo} | "
                              f"{ratio(by(rows, policy).capacity, best.capacity):.2f} |")
        if (name, slo) in oracles:
            oracle = oracles[name, slo]
            ratios.append(f"| per-phase oracle ({oracle.config}) / best fixed ({best.config}) | {name} | {slo} | "
                          f"{ratio(oracle.capacity, best.capacity):.2f} |")
        if slo == "strict" and any(r.config == "vllm" for r in rows):
            ratios.append(f"| sarathi best fixed ({best.config}) / vllm | {name} | strict | "
                          f"{ratio(best.capacity, by(rows, 'vllm').capacity):.2f} |")
    print("\n" + "\n".join(ratios), flush=True)

    targets = verdicts(exp, stationary, phased)
    print("\n" + "\n".join(targets), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    drawn = figures(exp, stationary, phased, oracles, phased_specs, args.out)
    runtime = time.perf_counter() - wall
    searches = [f"{name} {slo}: {sum(r.result.wall_time_s for r in exp.rows if (r.workload, r.slo) == (name, slo)) / 60:.1f}"
                f" min" for name, slo in dict.fromkeys((r.workload, r.slo) for r in exp.rows)]
    skipped = [w for w in WORKLOADS if w not in workloads] + [f"the {s} SLO" for s in SLOS if s not in slos]
    shares = {kind: f"{round(args.num_requests * c)}" for kind, (c, _, _) in PHASED.items()}
    text = [
        "# Capacity comparison: SLO capacity", "",
        f"Produced by `python experiments/capacity_comparison.py {' '.join(sys.argv[1:])}`".rstrip() + f" on "
        f"{date.today()}, commit {_commit()}.", "",
        "The figure is the **SLO capacity** (`find_capacity(...).slo_capacity_qps`): the highest mean Poisson "
        "request rate at which every declared target of the SLO policy holds at its percentile, TTFT over "
        "requests and TBT over every token gap of every request (strict: TTFT P90 <= 2 s and TBT P99 <= 65 ms; "
        "relaxed: TTFT P90 <= 8 s and TBT P99 <= 325 ms). '/ best fixed' divides it by the best fixed budget's "
        "SLO capacity on the same workload and SLO. The column **proxy** is Sarathi-Serve's capacity from the "
        "same simulations (P99 TBT <= the TBT target and median scheduling delay <= 2 s; it ignores the TTFT "
        "target), kept for comparison with the paper.", "",
        f"- Latency model: {card}", f"- Machine: {_machine()}", f"- Seed: {args.seed}",
        f"- Requests per simulation: {args.num_requests} (stationary and burst), {2 * args.num_requests} (phased)",
        f"- KV cache: {exp.num_kv_blocks} blocks of {BLOCK_SIZE} tokens; max_num_seqs 256",
        f"- Search: find_capacity, relative tolerance {REL_TOL:.0%}; the SLO capacity, proxy and goodput searches "
        "share simulations; each search starts at the previous config's SLO capacity on the same workload",
        f"- phased: 4 phases alternating sharegpt_8k (chat) and arxiv_4k (summarization), {shares['phased']} "
        "requests each, each phase's base rate = the best fixed budget's SLO capacity on its trace under the same "
        "SLO",
        f"- burst: sharegpt_8k {shares['burst']} requests at its SLO capacity, then arxiv_4k "
        f"{round(args.num_requests * PHASED['burst'][1])} requests at {PHASED['burst'][2]:g}x its SLO capacity, "
        "twice",
        "- On both, capacity scales all phases by one factor (mean qps reported). oracle:A/B (not a deployable "
        "policy: it knows the phase boundaries) switches to each phase's best stationary fixed budget (A for "
        "sharegpt_8k, B for arxiv_4k) when the phase's first request arrives",
        f"- Wall time of the searches (host seconds, one process): {'; '.join(searches)}; whole run "
        f"{runtime / 60:.1f} min (figures included)",
        *([f"- Not run: {', '.join(skipped)} (this run's --workloads/--slos)"] if skipped else []), "",
        "## SLO capacity", "", HEADER, *[r.line() for r in exp.rows], "", *ratios, "", "## Targets", "", *targets, "",
        f"Figures: {', '.join(drawn)}.", ""]
    path = args.out / "capacity_comparison.md"
    # Keep the hand-written analysis of an earlier run (it says which run it is about).
    old = path.read_text() if path.is_file() else ""
    analysis = old[old.index("## Analysis"):] if "## Analysis" in old else ""
    path.write_text("\n".join(text) + ("\n" + analysis if analysis else ""))
    print(f"wrote {path} and figures; runtime {runtime / 60:.1f} min", file=sys.stderr)


def _subset(text: str, known: tuple[str, ...], flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"{flag} {text!r}: unknown {', '.join(unknown) or '(empty)'}; use a comma-separated subset "
                         f"of {','.join(known)}")
    return [n for n in known if n in names]


def _commit() -> str:
    """The checkout's commit, marked dirty when tracked files differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if dirty else "")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (shared), Python {platform.python_version()}"


def verdicts(exp: Experiment, stationary, phased) -> list[str]:
    """The targets, judged on SLO capacity; a target whose rows were not run is left out."""
    out = []
    for policy in ("adaptive",):
        pairs = [(ratio(by(rows, policy).capacity, best_fixed(rows).capacity), key)
                 for key, rows in stationary.items() if any(r.config == policy for r in rows)]
        if pairs:
            low, (name, slo) = min(pairs, key=lambda x: x[0])
            met = low >= 0.97
            out.append(f"- {policy} >= 0.97x best fixed on every stationary workload run: "
                       f"{'MET' if met else 'MISSED'} (lowest {low:.2f} on {name} {slo}"
                       + ("" if met else f", {0.97 - low:.2f} short") + ")")
    for (kind, slo), rows in phased.items():
        for policy in ("adaptive",):
            if any(r.config == policy for r in rows):
                r = ratio(by(rows, policy).capacity, best_fixed(rows).capacity)
                out.append(f"- {policy} >= 1.2x best single fixed budget on the {kind} workload ({slo}): "
                           f"{'MET' if r >= 1.2 else 'MISSED'} ({r:.2f}"
                           + ("" if r >= 1.2 else f", {1.2 - r:.2f} short") + ")")
    claimed = [r for r in exp.rows if r.capacity > 0]
    over = [r for r in claimed if not (r.ttft_ms <= r.result.ttft_slo_s * 1e3 and r.tbt_ms <= r.result.tbt_slo_s * 1e3)]
    zero = [r for r in exp.rows if r.capacity == 0]
    out.append(f"- TTFT and TBT within their targets at their percentiles wherever SLO capacity is claimed: "
               f"{'MET' if not over else 'MISSED'} ({len(claimed) - len(over)} of {len(claimed)} claimed capacities"
               + (f"; {len(zero)} configs with no passing rate: "
                  + ", ".join(f"{r.config} {r.workload} {r.slo}" for r in zero) if zero else "") + ")")
    for (name, slo), rows in stationary.items():
        if slo == "strict" and any(r.config == "vllm" for r in rows):
            r = ratio(best_fixed(rows).capacity, by(rows, "vllm").capacity)
            out.append(f"- sarathi fixed >= 2x vllm under the strict SLO ({name}): {'MET' if r >= 2 else 'MISSED'} "
                       f"({r:.2f}" + ("" if r >= 2 else f", {2 - r:.2f} short") + ")")
    return out


def figures(exp: Experiment, stationary, phased, oracles, phased_specs, out: Path) -> list[str]:
    """Draws what the measured rows allow; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    panels = list(stationary.items()) + [(key, rows + [oracles[key]]) for key, rows in phased.items()]
    columns = min(4, len(panels))
    nrows = -(-len(panels) // columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(4.5 * columns, 4 * nrows))
    axes = np.atleast_1d(axes).ravel()
    for ax, ((name, slo), rows) in zip(axes, panels):
        colors = ["tab:green" if r.config == "adaptive"
                  else "tab:gray" if r.config in ("vllm", "orca")
                  else "tab:orange" if r.config.startswith("oracle:") else "tab:blue" for r in rows]
        labels = [r.config for r in rows]
        ax.bar(labels, [r.capacity for r in rows], color=colors, label="SLO capacity")
        ax.plot(labels, [r.proxy for r in rows], "k_", ms=10, mew=1.5, ls="none", label="proxy")
        ax.set_title(f"{name}, {slo}")
        ax.tick_params(axis="x", rotation=70)
        ax.set_ylabel("SLO capacity (qps)")
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "capacity_bars.png", dpi=120)
    plt.close(fig)
    drawn.append("capacity_bars.png")

    rows = stationary.get(("sharegpt_8k", "strict"), [])
    chosen = [r for r in rows if r.config in ("adaptive", "vllm")]
    if rows and any(r.config.startswith("fixed:") for r in rows):
        chosen.append(best_fixed(rows))
    if any(r.capacity > 0 for r in chosen):
        # TBT CDFs on sharegpt_8k strict at the lowest SLO capacity of those drawn (all meet the SLO there).
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
        drawn.append("tbt_cdf.png")

    drawable = [(key, rows) for key, rows in phased.items() if any(r.config == "adaptive" for r in rows)]
    if drawable:
        # The adaptive budget over time on the phased workloads at adaptive's SLO capacity.
        fig, axes = plt.subplots(len(drawable), 1, figsize=(8, 3 * len(drawable)))
        for ax, ((kind, slo), rows) in zip(np.atleast_1d(axes), drawable):
            row = by(rows, "adaptive")
            workload = phased_specs[kind, slo].scaled(max(row.result.slo_capacity_scale, 1e-6))
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
        drawn.append("budget_over_time.png")
    return drawn


if __name__ == "__main__":
    main()
