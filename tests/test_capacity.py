"""Capacity search: bracketing and bisection, and sensible answers on a roofline model."""

from __future__ import annotations

import pytest

from adaptive_sarathi.capacity import _highest_passing, find_capacity
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.latency.roofline import roofline_from_spec
from adaptive_sarathi.scenario import Scenario
from adaptive_sarathi.workloads import LogNormal, SyntheticLengths, Uniform, single_phase


@pytest.mark.parametrize("edge,start", [(7.3, 1.0), (0.01, 1.0), (3.0, 50.0)])
def test_highest_passing_brackets_then_bisects(edge, start):
    calls = []

    def passes(x):
        calls.append(x)
        return x <= edge

    found = _highest_passing(passes, start, rel_tol=0.01)
    assert edge / 1.01 <= found <= edge
    assert len(calls) < 25


def test_highest_passing_reports_zero_when_nothing_passes():
    assert _highest_passing(lambda x: False, 1.0, 0.01) == 0.0


def scenario(tbt_ms: float, scheduler: str = "vllm", policy: str = "fixed:4096", ttft: str = "3000") -> Scenario:
    workload = single_phase(SyntheticLengths(LogNormal(1000, 0.8, max=4000), Uniform(16, 128)), 1.0,
                            num_requests=120, seed=0)
    return Scenario(workload, SchedulerConfig(name=scheduler), policy, roofline_from_spec("h100:llama-3-8b"),
                    num_kv_blocks=5000, slo=SLOPolicy.from_shorthand(f"ttft:{ttft},tbt:{tbt_ms}"))


def test_a_looser_tbt_slo_never_lowers_capacity():
    strict, relaxed = find_capacity(scenario(30), rel_tol=0.05), find_capacity(scenario(120), rel_tol=0.05)
    assert 0 < strict.capacity_qps <= relaxed.capacity_qps
    assert 0 < strict.slo_capacity_qps <= relaxed.slo_capacity_qps
    assert 0 < strict.goodput_qps <= relaxed.goodput_qps
    # The probes around the answer show the edge: one passing at it, one failing above it.
    edge = [p for p in strict.probes if p.qps_scale == strict.capacity_scale]
    assert edge and edge[0].meets_capacity and edge[0].tbt_p99_s <= 0.030
    assert any(not p.meets_capacity and p.qps > strict.capacity_qps for p in strict.probes)
    assert strict.to_dict()["capacity_qps"] == strict.capacity_qps
    assert "proxy" in strict.to_dict()["definitions"]["capacity_qps"]


def test_slo_capacity_holds_every_declared_percentile_at_its_edge():
    result = find_capacity(scenario(60, "sarathi", "fixed:512", ttft="800@p90"), rel_tol=0.05)
    assert (result.ttft_percentile, result.tbt_percentile) == (90, 99)
    edge = next(p for p in result.probes if p.qps_scale == result.slo_capacity_scale)
    assert edge.meets_slo and edge.ttft_p_s <= 0.8 and edge.tbt_p_s <= 0.060
    above = min((p for p in result.probes if p.qps > result.slo_capacity_qps), key=lambda p: p.qps)
    assert not above.meets_slo and above.ttft_p_s > 0.8
    assert above.qps <= result.slo_capacity_qps * 1.05 * 1.0001  # bisected to the tolerance
    # The declared percentile counts: the median TTFT allows a higher rate than its P90. The proxy
    # ignores the TTFT target, so its figure does not move.
    median = find_capacity(scenario(60, "sarathi", "fixed:512", ttft="800@p50"), rel_tol=0.05)
    assert result.slo_capacity_qps < median.slo_capacity_qps
    assert result.capacity_qps == median.capacity_qps > result.slo_capacity_qps
    assert result.wall_time_s > 0


def test_the_three_searches_share_their_simulations():
    base = scenario(60, "sarathi", "fixed:512", ttft="800@p90")
    runs = []

    class Counting:
        workload, slo = base.workload, base.slo

        def run(self, scale):
            runs.append(scale)
            return base.run(scale)

    result = find_capacity(Counting(), rel_tol=0.1)
    assert len(runs) == len(set(runs)) == len(result.probes)  # no rate simulated twice
    alone = []
    for criterion in ("meets_slo", "meets_capacity", "meets_goodput"):
        seen = {p.qps_scale: getattr(p, criterion) for p in result.probes}
        asked = []
        _highest_passing(lambda x: asked.append(x) or seen[x], 1.0, 0.1)
        alone.append(len(asked))
    assert len(runs) < sum(alone)


def test_capacity_needs_an_slo():
    s = scenario(30)
    with pytest.raises(ValueError, match="capacity needs SLO targets"):
        find_capacity(Scenario(s.workload, s.scheduler, s.policy, s.latency_model, s.num_kv_blocks))
