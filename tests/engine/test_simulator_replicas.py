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


class Capped(FixedBudget):
    """Admits a request while its replica holds fewer than `limit`; keeps every answer it gave."""

    def __init__(self, limit: int, token_budget: int = 256, deadlines: SloTargets | None = None):
        super().__init__(token_budget, deadlines=deadlines)
        self.limit = limit
        self.answers: list[bool] = []

    def admits(self, state, num_prompt_tokens, slo_class=None):
        self.answers.append(state.num_running + state.num_waiting < self.limit)
        return self.answers[-1]


def built(limit: int, **kw):
    """A make_policy for simulate_replicas that keeps the policies it built, one per replica."""
    policies: list[Capped] = []

    def make():
        policies.append(Capped(limit, **kw))
        return policies[-1]

    return make, policies


def test_behind_round_robin_each_replica_refuses_what_its_own_admission_refuses():
    # Twenty 200-token requests 5 ms apart on two replicas that each serve one request at a time
    # (a request runs ~40 ms): round robin hands every other one to a busy replica.
    slo = SloTargets(ttft_s=1.0, tbt_s=1.0)
    work = requests([(0.005 * i, 200, 10) for i in range(20)])
    make, policies = built(limit=1)
    result = simulate_replicas(work, CONFIG, make, Linear(), num_replicas=2, routing="round_robin",
                               num_kv_blocks=400, slo=slo, admission=True)
    refused = tuple(p.answers.count(False) for p in policies)
    assert [len(p.answers) for p in policies] == [10, 10]  # each asked once per request placed on it
    assert result.refused_per_replica == refused and sum(refused) > 0
    assert result.num_refused == sum(refused)  # round robin refuses nothing itself
    assert result.requests_per_replica == tuple(p.answers.count(True) for p in policies)
    assert result.num_requests + result.num_refused == 20
    assert result.slo.num_requests == 20 and result.slo.num_refused == result.num_refused
    assert result.slo.attainment <= result.num_requests / 20
    # Without admission every placed request is queued, however long the queue.
    make, policies = built(limit=1)
    queued = simulate_replicas(work, CONFIG, make, Linear(), num_replicas=2, routing="round_robin",
                               num_kv_blocks=400, slo=slo)
    assert (queued.num_requests, queued.num_refused, queued.refused_per_replica) == (20, 0, (0, 0))
    assert all(not p.answers for p in policies)


def test_headroom_refuses_at_the_router_and_its_replicas_refuse_by_their_own_admission():
    slo = SloTargets(ttft_s=0.05, tbt_s=1.0, ttft_percentile=90)
    # Four 100-token prompts, then four 400-token ones, all at once: headroom forecasts the short
    # ones within 50 ms and places them, the long ones not (refused at the router); the replica
    # admits one request at a time, so it refuses every short one after the first.
    work = requests([(0.0, 100, 2)] * 4 + [(0.0, 400, 2)] * 4)
    make, policies = built(limit=1, token_budget=512, deadlines=slo)
    result = simulate_replicas(work, CONFIG, make, Linear(), num_replicas=1, routing="headroom",
                               num_kv_blocks=400, slo=slo, admission=True)
    (replica_refused,) = result.refused_per_replica
    assert replica_refused == policies[0].answers.count(False) > 0
    router_refused = 8 - len(policies[0].answers)  # the router asked the replica about the others
    assert router_refused > 0
    assert result.num_refused == router_refused + replica_refused
    assert result.num_requests == policies[0].answers.count(True) == 1


def test_bad_arguments_name_the_fix():
    work = requests([(0.0, 10, 1)])
    with pytest.raises(ValueError, match="num_replicas=0 is invalid"):
        simulate_replicas(work, CONFIG, FixedBudget, Linear(), num_replicas=0, routing="headroom", num_kv_blocks=10)
    with pytest.raises(ValueError, match="routing='random' is unknown"):
        simulate_replicas(work, CONFIG, FixedBudget, Linear(), num_replicas=2, routing="random", num_kv_blocks=10)
