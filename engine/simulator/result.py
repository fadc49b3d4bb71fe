"""What a simulation reports: latency percentiles, SLO attainment, goodput, throughput, budgets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Sequence

import numpy as np

from adaptive_sarathi.engine.request import Request, RequestTimeline
from adaptive_sarathi.engine.simulator.slo import SloTargets
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
    """Per-request attainment (fractions of requests meeting each declared target and all of
    them), goodput (requests/s meeting all), and whether the run's percentiles meet the targets."""

    targets: SloTargets
    attainment: float
    ttft_attainment: float | None
    tbt_attainment: float | None
    goodput_rps: float
    percentiles_met: bool


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
    report = None
    if slo is not None and not slo.is_empty:
        ok = np.ones(len(timelines), dtype=bool)
        ttft_ok = tbt_ok = None
        met = True
        if slo.ttft_s is not None:
            ttft_ok = ttft <= slo.ttft_s
            ok &= ttft_ok
            met = len(ttft) == 0 or float(np.percentile(ttft, slo.ttft_percentile)) <= slo.ttft_s
        if slo.tbt_s is not None:
            tbt_ok = np.array([len(g) == 0 or np.percentile(g, slo.tbt_percentile) <= slo.tbt_s for g in gaps],
                              dtype=bool)
            ok &= tbt_ok
            met = met and (len(all_gaps) == 0 or float(np.percentile(all_gaps, slo.tbt_percentile)) <= slo.tbt_s)
        fraction = (lambda mask: float(mask.mean()) if len(mask) else 1.0)
        report = SloReport(slo, fraction(ok), None if ttft_ok is None else fraction(ttft_ok),
                           None if tbt_ok is None else fraction(tbt_ok), rate(int(ok.sum())), bool(met))
    return SimulationResult(
        num_requests=len(timelines), num_steps=len(budgets), makespan_s=makespan, ttft=Percentiles.of(ttft),
        tbt=Percentiles.of(all_gaps), scheduling_delay=Percentiles.of(delay), e2e=Percentiles.of(finished - arrival),
        requests_per_s=rate(len(timelines)), tokens_per_s=rate(num_prompt_tokens + num_outputs),
        output_tokens_per_s=rate(num_outputs), num_preemptions=sum(r.num_preemptions for r in requests),
        budget=budget, slo=report, wall_time_s=wall_time_s, timelines=timelines, steps=steps, schedule=schedule)


def _mean_min_max(values: np.ndarray) -> tuple[float, int, int]:
    if len(values) == 0:
        return 0.0, 0, 0
    return float(values.mean()), int(values.min()), int(values.max())


def _plain(value):
    return asdict(value) if is_dataclass(value) else value
