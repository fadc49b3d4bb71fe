"""Capacity search: the highest request rate a scenario sustains.

Capacity (Sarathi-Serve's definition): the highest rate at which P99 TBT <= the TBT target and the
median scheduling delay <= 2 s. Goodput rate (DistServe's): the highest rate at which at least
`min_attainment` of requests meet every SLO target. Both are found by doubling or halving from a
start rate until the criterion flips, then bisecting; every phase's rate is scaled by one factor.
Seeded workloads keep their random draws as the rate changes (arrival times just scale), so the
criteria are close to monotone in the rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

from tqdm import tqdm

from adaptive_sarathi.engine.simulator import SimulationResult
from adaptive_sarathi.scenario import Scenario

MAX_MEDIAN_SCHEDULING_DELAY_S = 2.0


@dataclass(frozen=True)
class Probe:
    """One simulation of the search, at `qps_scale` x the workload's rates (mean `qps`)."""

    qps_scale: float
    qps: float
    tbt_p99_s: float
    scheduling_delay_p50_s: float
    slo_attainment: float
    goodput_rps: float
    meets_capacity: bool
    meets_goodput: bool


@dataclass(frozen=True)
class CapacityResult:
    """capacity_qps / goodput_qps: the highest mean request rates meeting each criterion (0 when
    even the lowest rate tried fails); *_scale: the same as factors on the workload's rates."""

    capacity_qps: float
    capacity_scale: float
    goodput_qps: float
    goodput_scale: float
    base_qps: float
    tbt_slo_s: float
    min_attainment: float
    probes: tuple[Probe, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def find_capacity(scenario: Scenario, *, start_scale: float = 1.0, rel_tol: float = 0.02,
                  min_attainment: float = 0.9, max_scheduling_delay_s: float = MAX_MEDIAN_SCHEDULING_DELAY_S,
                  progress: bool = False) -> CapacityResult:
    """Search the capacity and the goodput rate of `scenario`, bisecting until the bracket is
    within `rel_tol` (relative). Simulations are shared between the two searches. Raises
    ValueError when the scenario has no SLO policy (its TBT target defines capacity)."""
    if scenario.slo is None:
        raise ValueError("capacity needs SLO targets: pass --slo ttft:MS,tbt:MS or --slo-policy NAME|FILE")
    if not 0 < min_attainment <= 1:
        raise ValueError(f"min_attainment={min_attainment!r} is invalid: use a fraction in (0, 1]")
    if not rel_tol > 0:
        raise ValueError(f"rel_tol={rel_tol!r} is invalid: use a fraction > 0")
    tbt_slo = scenario.slo.tbt.target_s
    base_qps = scenario.workload.mean_qps
    probes: dict[float, Probe] = {}
    bar = tqdm(desc="capacity", unit="sim", disable=not progress)

    def probe(scale: float) -> Probe:
        if scale not in probes:
            r: SimulationResult = scenario.run(scale)
            attainment = r.slo.attainment if r.slo is not None else 0.0
            probes[scale] = Probe(
                scale, scale * base_qps, r.tbt.p99, r.scheduling_delay.p50, attainment,
                r.slo.goodput_rps if r.slo is not None else 0.0,
                meets_capacity=_le(r.tbt.p99, tbt_slo) and r.scheduling_delay.p50 <= max_scheduling_delay_s,
                meets_goodput=attainment >= min_attainment)
            bar.update(1)
            bar.set_postfix(qps=f"{scale * base_qps:.3g}")
        return probes[scale]

    with bar:
        capacity = _highest_passing(lambda s: probe(s).meets_capacity, start_scale, rel_tol)
        goodput = _highest_passing(lambda s: probe(s).meets_goodput, start_scale, rel_tol)
    return CapacityResult(capacity * base_qps, capacity, goodput * base_qps, goodput, base_qps, tbt_slo,
                          min_attainment, tuple(sorted(probes.values(), key=lambda p: p.qps_scale)))


def _le(value: float, limit: float) -> bool:
    return not math.isnan(value) and value <= limit


# Rates below this fraction of the start count as zero capacity; above this multiple, as unbounded
# (a latency model too fast for the workload to load it).
_MIN_FACTOR, _MAX_FACTOR = 2.0 ** -12, 2.0 ** 12


def _highest_passing(passes: Callable[[float], bool], start: float, rel_tol: float) -> float:
    """The highest x with passes(x), assuming passes is (close to) monotone decreasing in x:
    double or halve from `start` to bracket the edge, then bisect geometrically. 0.0 when even
    start * 2^-12 fails; start * 2^12 when that still passes."""
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
