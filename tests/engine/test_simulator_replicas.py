"""N simulated replicas behind a router: the same engine per replica, one timeline."""

from __future__ import annotations

import math

import pytest

from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.simulator import SloTargets, simulate, simulate_replicas
from adaptive_sarathi.workloads import WorkloadRequest

CONFIG = SchedulerConfig(name="sarathi", block_size=16)


class Linear:
    """A step costs 10 ms plus 0.1 ms per token."""

    def step_time(self, shape) -> float:
        return 0.01 + 1e-4 * shape.num_tokens


def requests(specs):
    return [WorkloadRequest(t, p, o) for t, p, o in specs]


def test_one_replica_serves_exactly_what_simulate_serves():
    work = requests([(0.05 * i, 64 + 37 * (i % 5), 3 + i % 4) for i in range(30)])
    alone = simulate(work, CONFIG, FixedBudget(128), Linear(), num_kv_blocks=200)
    routed = simulate_replicas(work, CONFIG, lambda: FixedBudget(128), Linear(), num_replicas=1,
                               routing="least_outstanding", num_kv_blocks=200)
    assert [t.token_times for t in routed.timelines] == [t.token_times for t in alone.timelines]
    assert routed.num_steps == alone.num_steps
    assert routed.requests_per_replica == (30,)


def test_replicas_run_in_parallel_on_their_own_clocks():
    # Two requests arriving together: one replica serves them in one batch, two serve one each,
    # both first tokens after a single 100-token prefill step.
    work = requests([(0.0, 100, 1), (0.0, 100, 1)])
    two = simulate_replicas(work, CONFIG, lambda: FixedBudget(100), Linear(), num_replicas=2,
                            routing="round_robin", num_kv_blocks=100)
    assert two.requests_per_replica == (1, 1)
    assert [t.first_token_time for t in two.timelines] == [pytest.approx(0.02)] * 2
    one = simulate_replicas(work, CONFIG, lambda: FixedBudget(100), Linear(), num_replicas=1,
                            routing="round_robin", num_kv_blocks=100)
    assert sorted(t.first_token_time for t in one.timelines) == [pytest.approx(0.02), pytest.approx(0.04)]


def test_least_outstanding_avoids_the_busy_replica_that_round_robin_loads():
    # A long request first, then short ones: round robin puts every other one behind the long
    # prompt, least-outstanding keeps them on the free replica while the long one runs.
    work = requests([(0.0, 2000, 50)] + [(0.01 + 0.05 * i, 32, 2) for i in range(6)])
    rr = simulate_replicas(work, CONFIG, lambda: FixedBudget(256), Linear(), num_replicas=2,
                           routing="round_robin", num_kv_blocks=400)
    lor = simulate_replicas(work, CONFIG, lambda: FixedBudget(256), Linear(), num_replicas=2,
                            routing="least_outstanding", num_kv_blocks=400)
    assert rr.requests_per_replica == (4, 3)
    assert lor.requests_per_replica == (1, 6)
    assert lor.ttft.p90 < rr.ttft.p90


def test_headroom_refusals_count_as_misses():
    slo = SloTargets(ttft_s=0.05, tbt_s=1.0, ttft_percentile=90)
    # Eight 400-token prompts at once on one replica: the first ones fit the 50 ms target, the
    # later ones cannot, and are refused rather than queued.
    work = requests([(0.0, 400, 2)] * 8)

    def policy():
        return FixedBudget(512, deadlines=slo)

    result = simulate_replicas(work, CONFIG, policy, Linear(), num_replicas=1, routing="headroom",
                               num_kv_blocks=400, slo=slo)
    assert result.num_refused > 0
    assert result.num_requests + result.num_refused == 8
    assert result.slo.num_requests == 8
    assert result.slo.attainment <= result.num_requests / 8
    assert not result.slo.percentiles_met
    assert math.isfinite(result.ttft.p99)  # latency percentiles are over the served ones


def test_bad_arguments_name_the_fix():
    work = requests([(0.0, 10, 1)])
    with pytest.raises(ValueError, match="num_replicas=0 is invalid"):
        simulate_replicas(work, CONFIG, FixedBudget, Linear(), num_replicas=0, routing="headroom", num_kv_blocks=10)
    with pytest.raises(ValueError, match="routing='random' is unknown"):
        simulate_replicas(work, CONFIG, FixedBudget, Linear(), num_replicas=2, routing="random", num_kv_blocks=10)
