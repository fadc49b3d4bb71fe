"""What a simulation reports: latency percentiles, SLO attainment, goodput, throughput, budgets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Mapping, Sequence

import numpy as np

from adaptive_sarathi.engine.request import Request, RequestTimeline
from adaptive_sarathi.engine.simulator.slo import PercentileCheck, check_percentile
from adaptive_sarathi.engine.slo_targets import SloTargets
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

    Classes: when any request has an slo_class, per_class holds one report per class (key
    UNCLASSED for requests without one, judged by the top-level targets), each over that class's
    requests and gaps by that class's targets (SloTargets.targets_for), goodput per second of the
    whole run's makespan. Then percentiles_met says whether every class meets its own targets,
    and the attainments judge each request (each gap) by its class's targets; ttft_p_s, tbt_p_s,
    ttft_met and tbt_met still judge the top-level targets over every request and gap, for
    reference. Without classes per_class is empty and every field is as described above.
    num_requests: the requests judged, num_refused of them refused at admission (a 429): each
    counts as a request whose first token never came (TTFT infinite, no gaps), so it misses its
    TTFT target and attainment.
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
    num_requests: int = 0
    per_class: Mapping[str, "SloReport"] = field(default_factory=dict)
    num_refused: int = 0


# The per_class key of requests without a class; SLO policy class names cannot start with "(".
UNCLASSED = "(none)"


@dataclass(frozen=True)
class SimulationResult:
    """One simulated run. Latencies in seconds of virtual time; makespan_s runs from the first
    arrival to the last finish; wall_time_s is the host time the simulation took. num_requests
    counts the requests served (the latencies, rates and timelines are theirs); num_refused those
    refused at admission (simulate(admission=True)), which the SLO report counts as misses."""

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
    num_prompt_tokens: int = 0  # over every request
    num_cached_prompt_tokens: int = 0  # of those, found in the prefix cache at first admission
    num_refused: int = 0
    requests_per_replica: tuple[int, ...] = ()  # served requests of each replica, when replicas were simulated
    refused_per_replica: tuple[int, ...] = ()  # of num_refused, those each replica's own admission refused

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Fraction of prompt tokens served from the prefix cache (0 without prompt tokens)."""
        return self.num_cached_prompt_tokens / self.num_prompt_tokens if self.num_prompt_tokens else 0.0

    def to_dict(self) -> dict:
        """The summary as JSON-ready data (no timelines, steps or schedule)."""
        skip = {"timelines", "steps", "schedule"}
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in skip}


def summarize(requests: Sequence[Request], num_prompt_tokens: int, budgets: np.ndarray, chunks: np.ndarray,
              step_tokens: np.ndarray, slo: SloTargets | None, wall_time_s: float,
              steps: tuple[StepStats, ...] | None, schedule: tuple[dict[str, int], ...] | None,
              refused_classes: Sequence[str | None] = ()) -> SimulationResult:
    """Build the result from finished requests and per-step arrays (budget, chunk limit, tokens);
    refused_classes: the class of each request refused before an engine held it (the policy's
    admission, or a router that found no replica to meet it)."""
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
    classes = [r.slo_class for r in requests] + list(refused_classes)
    judged_ttft = np.concatenate([ttft, np.full(len(refused_classes), np.inf)])
    judged_gaps = gaps + [np.empty(0)] * len(refused_classes)
    report = (_slo_report(slo, classes, judged_ttft, judged_gaps, all_gaps, rate)
              if slo is not None and not slo.is_empty else None)
    return SimulationResult(
        num_requests=len(timelines), num_steps=len(budgets), makespan_s=makespan, ttft=Percentiles.of(ttft),
        tbt=Percentiles.of(all_gaps), scheduling_delay=Percentiles.of(delay), e2e=Percentiles.of(finished - arrival),
        requests_per_s=rate(len(timelines)), tokens_per_s=rate(num_prompt_tokens + num_outputs),
        output_tokens_per_s=rate(num_outputs), num_preemptions=sum(r.num_preemptions for r in requests),
        budget=budget, slo=report, wall_time_s=wall_time_s, timelines=timelines, steps=steps, schedule=schedule,
        num_prompt_tokens=num_prompt_tokens, num_cached_prompt_tokens=sum(r.num_cached_tokens for r in requests),
        num_refused=len(refused_classes))


def _slo_report(slo: SloTargets, classes: Sequence[str | None], ttft: np.ndarray, gaps: list[np.ndarray],
                all_gaps: np.ndarray, rate) -> SloReport:
    everyone = _judge(slo, ttft, gaps, all_gaps)
    if all(c is None for c in classes):
        return _report(slo, everyone, rate, int(np.isinf(ttft).sum()))
    members: dict[str | None, list[int]] = {}
    for i, c in enumerate(classes):
        members.setdefault(c, []).append(i)
    judged = {}
    for c, index in members.items():
        mine = [gaps[i] for i in index]
        judged[c] = _judge(slo.targets_for(c), ttft[index], mine, np.concatenate(mine) if mine else np.empty(0))
    per_class = {UNCLASSED if c is None else c: _report(slo.targets_for(c), j, rate, int(np.isinf(ttft[members[c]]).sum()))
                 for c, j in judged.items()}
    parts = list(judged.values())
    ok = np.concatenate([j.ok for j in parts])
    with_ttft = [j.ttft_ok for j in parts if j.ttft_ok is not None]
    with_tbt = [j for j in parts if j.tbt_ok is not None]
    num_gaps = sum(len(j.tbt_check.samples) for j in with_tbt)
    top = everyone.ttft_check, everyone.tbt_check
    return SloReport(
        slo, _fraction(ok), _fraction(np.concatenate(with_ttft)) if with_ttft else None,
        _fraction(np.concatenate([j.tbt_ok for j in with_tbt])) if with_tbt else None,
        rate(int(ok.sum())), all(r.percentiles_met for r in per_class.values()),
        ttft_p_s=None if top[0] is None else top[0].check.observed_s,
        tbt_p_s=None if top[1] is None else top[1].check.observed_s,
        ttft_met=None if top[0] is None else top[0].check.met,
        tbt_met=None if top[1] is None else top[1].check.met,
        tbt_gap_attainment=(sum(j.tbt_check.num_within for j in with_tbt) / num_gaps if num_gaps else 1.0)
        if with_tbt else None,
        num_requests=len(ttft), per_class=per_class, num_refused=int(np.isinf(ttft).sum()))


@dataclass(frozen=True)
class _Checked:
    check: PercentileCheck
    samples: np.ndarray

    @property
    def num_within(self) -> int:
        return int(np.count_nonzero(self.samples <= self.check.target_s))


@dataclass(frozen=True)
class _Judged:
    """One group of requests judged by one set of targets (a check is None when undeclared)."""

    ok: np.ndarray  # per request: meets every declared target
    ttft_ok: np.ndarray | None
    tbt_ok: np.ndarray | None
    ttft_check: _Checked | None
    tbt_check: _Checked | None


def _judge(slo: SloTargets, ttft: np.ndarray, gaps: list[np.ndarray], all_gaps: np.ndarray) -> _Judged:
    ok = np.ones(len(ttft), dtype=bool)
    ttft_check = tbt_check = None
    ttft_ok = tbt_ok = None
    if slo.ttft_s is not None:
        ttft_check = _Checked(check_percentile(ttft, slo.ttft_s, slo.ttft_percentile), ttft)
        ttft_ok = ttft <= slo.ttft_s
        ok &= ttft_ok
    if slo.tbt_s is not None:
        tbt_check = _Checked(check_percentile(all_gaps, slo.tbt_s, slo.tbt_percentile), all_gaps)
        tbt_ok = np.array([len(g) == 0 or np.percentile(g, slo.tbt_percentile) <= slo.tbt_s for g in gaps],
                          dtype=bool)
        ok &= tbt_ok
    return _Judged(ok, ttft_ok, tbt_ok, ttft_check, tbt_check)


def _report(slo: SloTargets, j: _Judged, rate, num_refused: int) -> SloReport:
    checks = [c.check for c in (j.ttft_check, j.tbt_check) if c is not None]
    return SloReport(
        slo, _fraction(j.ok), None if j.ttft_ok is None else _fraction(j.ttft_ok),
        None if j.tbt_ok is None else _fraction(j.tbt_ok), rate(int(j.ok.sum())), all(c.met for c in checks),
        ttft_p_s=None if j.ttft_check is None else j.ttft_check.check.observed_s,
        tbt_p_s=None if j.tbt_check is None else j.tbt_check.check.observed_s,
        ttft_met=None if j.ttft_check is None else j.ttft_check.check.met,
        tbt_met=None if j.tbt_check is None else j.tbt_check.check.met,
        tbt_gap_attainment=None if j.tbt_check is None else j.tbt_check.check.within,
        num_requests=len(j.ok), num_refused=num_refused)


def _fraction(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else 1.0


def _mean_min_max(values: np.ndarray) -> tuple[float, int, int]:
    if len(values) == 0:
        return 0.0, 0, 0
    return float(values.mean()), int(values.min()), int(values.max())


def _plain(value):
    return asdict(value) if is_dataclass(value) else value
