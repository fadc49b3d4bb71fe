"""Capacity search: the highest request rate a scenario sustains under its declared SLO.

SLO capacity (the headline figure): the highest rate at which every declared target holds at its
percentile: the TTFT percentile over requests and the TBT percentile over every token gap of every
request (per gap, as vLLM and inference-perf count TBT), each within its target
(engine.simulator.result.SloReport.percentiles_met). Where the workload's requests carry SLO
classes, every class must meet its own targets, over its own requests and gaps.

Two more figures come from the same simulations. Capacity as Sarathi-Serve defines it, a proxy
kept for comparison with the paper: P99 TBT <= the TBT target and median scheduling delay <= 2 s
(it ignores the declared TTFT target and the declared percentiles). Goodput rate (DistServe's):
the highest rate at which at least `min_attainment` of requests meet every target.

Each is found by doubling or halving until its criterion flips, then bisecting geometrically;
every phase's rate is scaled by one factor. Seeded workloads keep their random draws as the rate
changes (arrival times just scale), so the criteria are close to monotone in the rate.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

from tqdm import tqdm

from adaptive_sarathi.engine.simulator import SimulationResult, SloTargets
from adaptive_sarathi.scenario import Scenario

MAX_MEDIAN_SCHEDULING_DELAY_S = 2.0

DEFINITIONS = {
    "slo_capacity_qps": "highest Poisson rate at which every declared target holds at its percentile "
                        "(TTFT over requests, TBT over every token gap)",
    "capacity_qps": "proxy (Sarathi-Serve's capacity): highest rate with P99 TBT <= the TBT target and median "
                    "scheduling delay <= 2 s; ignores the TTFT target and the declared percentiles",
    "goodput_qps": "highest rate at which at least min_attainment of requests meet every target",
}


@dataclass(frozen=True)
class ClassProbe:
    """One SLO class at one rate: its requests, the fraction meeting both of its targets, and its
    TTFT (over its requests) and per-gap TBT (over its gaps) at its percentiles, each judged
    against its own target, `targets` (seconds)."""

    num_requests: int
    attainment: float
    ttft_p_s: float
    ttft_met: bool
    tbt_p_s: float
    tbt_met: bool
    targets: SloTargets


@dataclass(frozen=True)
class Probe:
    """One simulation of the search, at `qps_scale` x the workload's rates (mean `qps`).

    ttft_p_s / tbt_p_s: the observed TTFT and per-gap TBT at the declared percentiles; meets_slo:
    both within their targets (SLO capacity's criterion); meets_capacity: the proxy's criterion;
    meets_goodput: slo_attainment >= min_attainment. With SLO classes, ttft_p_s and tbt_p_s are
    over every request at the top-level percentiles, meets_slo asks every class to meet its own
    targets and per_class holds each class's figures (empty without classes).
    """

    qps_scale: float
    qps: float
    ttft_p_s: float
    tbt_p_s: float
    tbt_p99_s: float
    scheduling_delay_p50_s: float
    slo_attainment: float
    goodput_rps: float
    meets_slo: bool
    meets_capacity: bool
    meets_goodput: bool
    per_class: Mapping[str, ClassProbe] = field(default_factory=dict)


@dataclass(frozen=True)
class CapacityResult:
    """Highest mean request rates meeting each criterion (0 when even the lowest rate tried
    fails); *_scale: the same as factors on the workload's rates.

    slo_capacity_qps: the SLO capacity, the figure that counts. capacity_qps: the proxy
    (Sarathi-Serve's definition, see DEFINITIONS). goodput_qps: the goodput rate. The targets
    are the scenario's top-level ones. per_class: with SLO classes, each class's figures at the
    SLO capacity rate (empty without classes, or when no rate met the SLO). wall_time_s: host
    seconds the whole search took, over len(probes) simulations.
    """

    slo_capacity_qps: float
    slo_capacity_scale: float
    capacity_qps: float
    capacity_scale: float
    goodput_qps: float
    goodput_scale: float
    base_qps: float
    ttft_slo_s: float
    ttft_percentile: float
    tbt_slo_s: float
    tbt_percentile: float
    min_attainment: float
    wall_time_s: float
    probes: tuple[Probe, ...]
    per_class: Mapping[str, ClassProbe] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "definitions": DEFINITIONS}


def find_capacity(scenario: Scenario, *, start_scale: float = 1.0, rel_tol: float = 0.02,
                  min_attainment: float = 0.9, max_scheduling_delay_s: float = MAX_MEDIAN_SCHEDULING_DELAY_S,
                  progress: bool = False, slo_only: bool = False) -> CapacityResult:
    """Search the SLO capacity, the proxy capacity and the goodput rate of `scenario`, bisecting
    until each bracket is within `rel_tol` (relative). Simulations are shared between the three
    searches: a rate simulated once is never simulated again, and every search walks the same
    doubling and bisection rates while its criterion agrees with an earlier one's. Raises
    ValueError when the scenario has no SLO policy, or for a bad min_attainment or rel_tol.
    slo_only: search the SLO capacity alone (the proxy and goodput fields are NaN): fewer
    simulations where only the headline figure is wanted."""
    if scenario.slo is None:
        raise ValueError("capacity needs SLO targets: pass --slo ttft:MS,tbt:MS or --slo-policy NAME|FILE")
    if not 0 < min_attainment <= 1:
        raise ValueError(f"min_attainment={min_attainment!r} is invalid: use a fraction in (0, 1]")
    if not rel_tol > 0:
        raise ValueError(f"rel_tol={rel_tol!r} is invalid: use a fraction > 0")
    started = time.perf_counter()
    ttft, tbt = scenario.slo.ttft, scenario.slo.tbt
    base_qps = scenario.workload.mean_qps
    probes: dict[float, Probe] = {}
    bar = tqdm(desc="capacity", unit="sim", disable=not progress)

    def probe(scale: float) -> Probe:
        if scale not in probes:
            r: SimulationResult = scenario.run(scale)
            slo = r.slo  # never None: the scenario's policy declares both targets
            attainment = slo.attainment
            probes[scale] = Probe(
                scale, scale * base_qps, slo.ttft_p_s, slo.tbt_p_s, r.tbt.p99, r.scheduling_delay.p50, attainment,
                slo.goodput_rps, meets_slo=slo.percentiles_met,
                meets_capacity=_le(r.tbt.p99, tbt.target_s) and r.scheduling_delay.p50 <= max_scheduling_delay_s,
                meets_goodput=attainment >= min_attainment, per_class=_per_class(slo))
            bar.update(1)
            bar.set_postfix(qps=f"{scale * base_qps:.3g}")
        return probes[scale]

    def search(criterion: str) -> float:
        return _highest_passing(lambda s: getattr(probe(s), criterion), start_scale, rel_tol)

    with bar:
        slo_capacity = search("meets_slo")
        capacity = math.nan if slo_only else search("meets_capacity")
        goodput = math.nan if slo_only else search("meets_goodput")
    return CapacityResult(slo_capacity * base_qps, slo_capacity, capacity * base_qps, capacity, goodput * base_qps,
                          goodput, base_qps, ttft.target_s, ttft.percentile, tbt.target_s, tbt.percentile,
                          min_attainment, time.perf_counter() - started,
                          tuple(sorted(probes.values(), key=lambda p: p.qps_scale)),
                          per_class=probes[slo_capacity].per_class if slo_capacity in probes else {})


def _per_class(slo) -> dict[str, ClassProbe]:
    return {name: ClassProbe(r.num_requests, r.attainment, r.ttft_p_s, r.ttft_met, r.tbt_p_s, r.tbt_met, r.targets)
            for name, r in slo.per_class.items()}


def _le(value: float, limit: float) -> bool:
    return not math.isnan(value) and value <= limit


# Rates below this fraction of the start count as zero capacity; above this multiple, as unbounded
# (a latency model too fast for the workload to load it).
_MIN_FACTOR, _MAX_FACTOR = 2.0 ** -12, 2.0 ** 12


def _highest_passing(passes: Callable[[float], bool], start: float, rel_tol: float) -> float:
    """The highest x with passes(x), assuming passes is (close to) monotone decreasing in x:
    double or halve from `start` to bracket the edge, then bisect geometrically. 0.0 when even
    start * 2^-12 fails; start * 2^12 when that still passes. The rates tried depend only on
    start and the answers, so searches of criteria that agree on a rate try the same next one."""
    lo = hi = None
    x = start
    while lo is None or hi is None:
        if passes(x):
            lo = x
            if hi is None:
                if x >= start * _MAX_FACTOR:
                    return x
                x *= 2.0
        else:
            hi = x
            if lo is None:
                if x <= start * _MIN_FACTOR:
                    return 0.0
                x /= 2.0
    while hi / lo - 1.0 > rel_tol:
        mid = math.sqrt(lo * hi)
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return lo
