"""Capacity search: bracketing and bisection, and sensible answers on a roofline model."""

from __future__ import annotations

import math
from dataclasses import replace

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


def tiered(batch_ttft_ms: float = 6000) -> SLOPolicy:
    from adaptive_sarathi.controller.slo import LatencyTarget, RequestClass

    ttft, tbt = LatencyTarget(250, 90), LatencyTarget(200, 99)
    return SLOPolicy("tiered-test", ttft, tbt, classes=(RequestClass("interactive", ttft, tbt),
                                                        RequestClass("batch", LatencyTarget(batch_ttft_ms, 90), tbt)))


def classed_scenario(slo: SLOPolicy, classes: tuple = ("interactive", "batch")) -> Scenario:
    from adaptive_sarathi.workloads import ArrivalProcess, Mix, MixComponent, Phase, WorkloadSpec

    # Short chat prompts and long summarization prompts: the batch class has the longer TTFTs.
    mix = Mix((MixComponent(SyntheticLengths(Uniform(100, 400), Uniform(16, 64)), 3, classes[0]),
               MixComponent(SyntheticLengths(Uniform(2500, 3500), Uniform(16, 64)), 1, classes[1])))
    workload = WorkloadSpec((Phase(mix, ArrivalProcess(1.0), num_requests=120),), seed=0)
    return Scenario(workload, SchedulerConfig(name="sarathi"), "fixed:512", roofline_from_spec("h100:llama-3-8b"),
                    num_kv_blocks=5000, slo=slo)


def test_slo_capacity_with_classes_needs_every_class_to_meet_its_own_targets():
    classed = find_capacity(classed_scenario(tiered()), rel_tol=0.05)
    # The same requests judged by the interactive targets alone (no classes) reach a lower rate:
    # the long batch prompts' TTFTs no longer count against 250 ms.
    strict = find_capacity(classed_scenario(SLOPolicy.from_shorthand("ttft:250@p90,tbt:200"), (None, None)),
                           rel_tol=0.05)
    assert 0 < strict.slo_capacity_qps < classed.slo_capacity_qps
    assert strict.per_class == {} and all(p.per_class == {} for p in strict.probes)
    assert set(classed.per_class) == {"interactive", "batch"}
    edge = next(p for p in classed.probes if p.qps_scale == classed.slo_capacity_scale)
    assert classed.per_class == edge.per_class
    assert all(c.ttft_met and c.tbt_met and c.ttft_p_s <= c.targets.ttft_s for c in edge.per_class.values())
    assert edge.per_class["batch"].targets.ttft_s == 6.0 and edge.per_class["interactive"].targets.ttft_s == 0.25
    assert sum(c.num_requests for c in edge.per_class.values()) == 120
    above = min((p for p in classed.probes if p.qps > classed.slo_capacity_qps), key=lambda p: p.qps)
    assert not above.meets_slo and not all(c.ttft_met and c.tbt_met for c in above.per_class.values())
    # A stricter batch class can only lower it.
    stricter = find_capacity(classed_scenario(tiered(batch_ttft_ms=250)), rel_tol=0.05)
    assert stricter.slo_capacity_qps < classed.slo_capacity_qps
    assert classed.to_dict()["per_class"]["batch"]["targets"]["ttft_s"] == 6.0


def test_a_workload_class_missing_from_the_policy_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"class\(es\) batch, interactive are not in SLO policy 'cli' \(its classes: "
                                         r"none\): pass --slo-policy"):
        classed_scenario(SLOPolicy.from_shorthand("ttft:600@p90,tbt:60"))


def replicated(replicas: int, routing: str) -> Scenario:
    workload = single_phase(SyntheticLengths(LogNormal(2000, 0.5, max=4000), Uniform(16, 64)), 1.0,
                            num_requests=60 * max(replicas, 1), seed=0)
    return Scenario(workload, SchedulerConfig(name="sarathi"), "fixed:1024", roofline_from_spec("h100:llama-3-8b"),
                    num_kv_blocks=5000, slo=SLOPolicy.from_shorthand("ttft:400,tbt:100"), replicas=replicas,
                    routing=routing)


@pytest.mark.slow
def test_capacity_of_replicas_grows_with_their_number_and_slo_only_skips_the_other_searches():
    one = find_capacity(replicated(1, "round_robin"), rel_tol=0.1, slo_only=True)
    three = find_capacity(replicated(3, "least_outstanding"), rel_tol=0.1, slo_only=True)
    assert 0 < one.slo_capacity_qps
    assert three.slo_capacity_qps > 2 * one.slo_capacity_qps
    assert math.isnan(three.capacity_qps) and math.isnan(three.goodput_qps)


def test_replicas_behind_round_robin_refuse_by_their_own_adaptive_admission():
    # Far over capacity: each replica's adaptive policy refuses what it cannot serve in time, as a
    # served replica answers 429; round robin itself refuses nothing.
    overloaded = replace(replicated(2, "round_robin"), policy="adaptive")
    result = overloaded.run(qps_scale=200.0)
    assert result.num_refused > 0 and result.num_refused == sum(result.refused_per_replica)
    assert all(n > 0 for n in result.refused_per_replica)
    assert result.num_requests + result.num_refused == 120
    queued = replace(overloaded, admission=False).run(qps_scale=200.0)
    assert (queued.num_refused, queued.num_requests) == (0, 120)


def test_replica_fields_are_checked():
    with pytest.raises(ValueError, match="replicas=0 is invalid"):
        replicated(0, "round_robin")
    with pytest.raises(ValueError, match="routing='nope' is unknown"):
        replicated(2, "nope")
