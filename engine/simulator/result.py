"""What a simulation reports: latency percentiles, SLO attainment, goodput, throughput, budgets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Sequence

import numpy as np

from adaptive_sarathi.engine.request import Request, RequestTimeline
from adaptive_sarathi.engine.simulator.slo import SloTargets, check_percentile
from adaptive_sarathi.engine.stats import StepStats


@dataclass(frozen=True)
class Percentiles:
    """Summary of a latency sample, seconds; NaN when the sample is empty."""

    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> "Percentiles":
        if len(values) == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = np.percentile(values, (50, 90, 99)).tolist()
        return cls(p50, p90, p99, float(values.mean()), float(values.max()))


@dataclass(frozen=True)
class BudgetStats:
    """The controller's decisions over the run's steps (tokens), and what the steps used."""

    token_budget_mean: float
    token_budget_min: int
    token_budget_max: int
    max_chunk_mean: float
    max_chunk_min: int
    max_chunk_max: int
    tokens_per_step_mean: float


@dataclass(frozen=True)
class SloReport:
    """How a run meets its declared targets (fields of an undeclared target are None).

    Percentile criteria (what SLO capacity tests): ttft_p_s is the ttft_percentile-th TTFT over
    requests, tbt_p_s the tbt_percentile-th TBT over every token gap of every request (per gap,
    as vLLM and inference-perf count it); ttft_met / tbt_met say whether each is <= its target
    (SloTargets), percentiles_met whether every declared one is. tbt_gap_attainment: the
    fraction of all gaps within the TBT target.

    Per-request attainment (what goodput counts): ttft_attainment is the fraction of requests
    with TTFT <= target, tbt_attainment the fraction whose own tbt_percentile-th gap is <= target,
    attainment the fraction meeting every target; goodput_rps those requests per second of the
    makespan.
    """

    targets: SloTargets
    attainment: float
    ttft_attainment: float | None
    tbt_attainment: float | None
    goodput_rps: float
    percentiles_met: bool
    ttft_p_s: float | None = None
    tbt_p_s: float | None = None
    ttft_met: bool | None = None
    tbt_met: bool | None = None
    tbt_gap_attainment: float | None = None


@dataclass(frozen=True)
class SimulationResult:
    """One simulated run. Latencies in seconds of virtual time; makespan_s runs from the first
    arrival to the last finish; wall_time_s is the host time the simulation took."""

    num_requests: int
    num_steps: int
    makespan_s: float
    ttft: Percentiles
    tbt: Percentiles  # over every gap between consecutive tokens of all requests
    scheduling_delay: Percentiles
    e2e: Percentiles
    requests_per_s: float
    tokens_per_s: float  # prompt + output tokens
    output_tokens_per_s: float
    num_preemptions: int
    budget: BudgetStats
    slo: SloReport | None
    wall_time_s: float  # host seconds simulate() took, setup included
    timelines: tuple[RequestTimeline, ...]
    steps: tuple[StepStats, ...] | None = None  # every step's stats, when recorded
    schedule: tuple[dict[str, int], ...] | None = None  # tokens per request id of every step, when recorded

    def to_dict(self) -> dict:
        """The summary as JSON-ready data (no timelines, steps or schedule)."""
        skip = {"timelines", "steps", "schedule"}
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in skip}


def summarize(requests: Sequence[Request], num_prompt_tokens: int, budgets: np.ndarray, chunks: np.ndarray,
              step_tokens: np.ndarray, slo: SloTargets | None, wall_time_s: float,
              steps: tuple[StepStats, ...] | None, schedule: tuple[dict[str, int], ...] | None) -> SimulationResult:
    """Build the result from finished requests and per-step arrays (budget, chunk limit, tokens)."""
    timelines = tuple(r.timeline for r in requests)
    arrival = np.array([t.arrival_time for t in timelines])
    ttft = np.array([t.first_token_time for t in timelines]) - arrival
    delay = np.array([t.first_scheduled_time for t in timelines]) - arrival
    finished = np.array([t.finished_time for t in timelines])
    gaps = [np.diff(t.token_times) for t in timelines]
    all_gaps = np.concatenate(gaps) if gaps else np.empty(0)
    makespan = float(finished.max() - arrival.min()) if len(timelines) else 0.0
    rate = (lambda count: count / makespan) if makespan > 0 else (lambda count: 0.0)
    num_outputs = sum(len(r.output_token_ids) for r in requests)
    budget = BudgetStats(*_mean_min_max(budgets), *_mean_min_max(chunks),
                         float(step_tokens.mean()) if len(step_tokens) else 0.0)
    report = _slo_report(slo, ttft, gaps, all_gaps, rate) if slo is not None and not slo.is_empty else None
    return SimulationResult(
        num_requests=len(timelines), num_steps=len(budgets), makespan_s=makespan, ttft=Percentiles.of(ttft),
        tbt=Percentiles.of(all_gaps), scheduling_delay=Percentiles.of(delay), e2e=Percentiles.of(finished - arrival),
        requests_per_s=rate(len(timelines)), tokens_per_s=rate(num_prompt_tokens + num_outputs),
        output_tokens_per_s=rate(num_outputs), num_preemptions=sum(r.num_preemptions for r in requests),
        budget=budget, slo=report, wall_time_s=wall_time_s, timelines=timelines, steps=steps, schedule=schedule)


def _slo_report(slo: SloTargets, ttft: np.ndarray, gaps: list[np.ndarray], all_gaps: np.ndarray,
                rate) -> SloReport:
    ok = np.ones(len(ttft), dtype=bool)
    fraction = (lambda mask: float(mask.mean()) if len(mask) else 1.0)
    ttft_check = tbt_check = None
    ttft_ok = tbt_ok = None
    if slo.ttft_s is not None:
        ttft_check = check_percentile(ttft, slo.ttft_s, slo.ttft_percentile)
        ttft_ok = ttft <= slo.ttft_s
        ok &= ttft_ok
    if slo.tbt_s is not None:
        tbt_check = check_percentile(all_gaps, slo.tbt_s, slo.tbt_percentile)
        tbt_ok = np.array([len(g) == 0 or np.percentile(g, slo.tbt_percentile) <= slo.tbt_s for g in gaps],
                          dtype=bool)
        ok &= tbt_ok
    checks = [c for c in (ttft_check, tbt_check) if c is not None]
    return SloReport(
        slo, fraction(ok), None if ttft_ok is None else fraction(ttft_ok), None if tbt_ok is None else fraction(tbt_ok),
        rate(int(ok.sum())), all(c.met for c in checks),
        ttft_p_s=None if ttft_check is None else ttft_check.observed_s,
        tbt_p_s=None if tbt_check is None else tbt_check.observed_s,
        ttft_met=None if ttft_check is None else ttft_check.met,
        tbt_met=None if tbt_check is None else tbt_check.met,
        tbt_gap_attainment=None if tbt_check is None else tbt_check.within)


def _mean_min_max(values: np.ndarray) -> tuple[float, int, int]:
    if len(values) == 0:
        return 0.0, 0, 0
    return float(values.mean()), int(values.min()), int(values.max())


def _plain(value):
    return asdict(value) if is_dataclass(value) else value
