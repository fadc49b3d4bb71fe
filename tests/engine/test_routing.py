"""Routing policies and the replica forecast they read, on hand-built snapshots."""

from __future__ import annotations

import math

import pytest

from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.queue_forecast import PrefillRate, ReplicaSnapshot, snapshot
from adaptive_sarathi.engine.routing import (RouteRequest, get_policy, headroom, least_outstanding, round_robin)
from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import PREFILL_QUEUE_LEN, EngineState

TIERED = SloTargets(ttft_s=2.0, tbt_s=0.1, classes={"interactive": SloTargets(ttft_s=1.0, tbt_s=0.1),
                                                    "batch": SloTargets(ttft_s=30.0, tbt_s=0.5)})


def snap(queue=(), rate=1000.0, outstanding=0, now=10.0, relegates=False, tbt_slack=math.inf, busy_until=None,
         targets=TIERED, overflow=0):
    return ReplicaSnapshot(now_s=now, prefill_queue=tuple(queue), overflow_tokens=overflow, prefill_rate_tps=rate,
                           relegates_late=relegates, tbt_slack_s=tbt_slack, num_outstanding=outstanding,
                           num_waiting=0, kv_utilization=0.0, targets=targets, busy_until_s=busy_until)


def test_forecast_counts_admitted_prefills_and_earlier_deadlines_only():
    # An admitted prefill (computed > 0) is ahead whatever its deadline; a waiting one only when
    # its deadline is no later than the new request's (the scheduler's deadline order).
    s = snap(queue=[(40.0, 300, 16), (10.5, 200, 0), (40.0, 5000, 0)])
    assert s.tokens_ahead(11.0) == 300 + 200
    assert s.tokens_ahead(math.inf) == 5500
    assert s.predicted_ttft_s(100, "interactive") == pytest.approx((500 + 100) / 1000)
    assert s.predicted_ttft_s(100, "batch") == pytest.approx((5500 + 100) / 1000)
    assert s.queued_prefill_tokens == 5500


def test_forecast_leaves_out_late_requests_only_where_the_replica_relegates_them():
    queue = [(9.0, 400, 0), (10.8, 100, 0)]  # the first is past its deadline at now=10
    assert snap(queue=queue).tokens_ahead(11.0) == 500
    assert snap(queue=queue, relegates=True).tokens_ahead(11.0) == 100


def test_forecast_adds_the_step_in_flight_and_waits_from_arrival():
    s = snap(busy_until=10.25, rate=200.0)
    assert s.predicted_ttft_s(50, None, arrival_s=10.0) == pytest.approx(0.25 + 0.25)
    # Without a known rate only the step in flight counts (optimistic, as admission is).
    assert snap(rate=None, queue=[(math.inf, 10_000, 5)]).predicted_ttft_s(50) == 0.0


def test_round_robin_takes_turns_blind_to_load():
    snaps = [snap(outstanding=9), snap(), snap()]
    assert [round_robin(snaps, RouteRequest(10, sequence=k)).replica for k in range(5)] == [0, 1, 2, 0, 1]


def test_least_outstanding_breaks_ties_by_queued_tokens_then_index():
    snaps = [snap(outstanding=3), snap(outstanding=2, queue=[(math.inf, 900, 0)]),
             snap(outstanding=2, queue=[(math.inf, 100, 0)]), snap(outstanding=2, queue=[(math.inf, 100, 0)])]
    assert least_outstanding(snaps, RouteRequest(10)).replica == 2


def test_headroom_sends_where_the_forecast_leaves_most_slack_not_fewest_requests():
    # Replica 0 holds one long prompt, replica 1 three short ones: fewer requests, more work.
    long_one = snap(outstanding=1, queue=[(math.inf, 4000, 16)])  # admitted: ahead of any new request
    short_ones = snap(outstanding=3, queue=[(10.5, 100, 0)] * 3)
    assert least_outstanding([long_one, short_ones], RouteRequest(200)).replica == 0
    decision = headroom([long_one, short_ones], RouteRequest(200, "interactive"))
    assert decision.replica == 1
    assert decision.predicted_ttft_s == pytest.approx(0.5)


def test_headroom_refuses_when_no_replica_meets_the_class_target():
    full = [snap(queue=[(10.5, 2000, 8)]), snap(queue=[(10.2, 1500, 8)])]
    decision = headroom(full, RouteRequest(100, "interactive"))
    assert decision.replica is None
    assert decision.predicted_ttft_s == pytest.approx(1.6)
    # The same queue meets a batch request's 30 s target.
    assert headroom(full, RouteRequest(100, "batch")).replica == 1
    # A margin keeps that share of the target in reserve.
    assert headroom([snap(queue=[(10.5, 850, 8)])], RouteRequest(100, "interactive"), margin=0.1).replica is None


def test_headroom_without_targets_picks_the_soonest_first_token_and_never_refuses():
    snaps = [snap(targets=None, queue=[(math.inf, 9000, 0)]), snap(targets=None, queue=[(math.inf, 8000, 0)])]
    decision = headroom(snaps, RouteRequest(100))
    assert decision.replica == 1


def test_headroom_breaks_equal_slack_by_tbt_slack():
    snaps = [snap(tbt_slack=0.01), snap(tbt_slack=0.05), snap(tbt_slack=0.02)]
    assert headroom(snaps, RouteRequest(100, "interactive")).replica == 1


def test_unknown_class_and_policy_and_no_replica_are_clear_errors():
    with pytest.raises(ValueError, match="routing='fastest' is unknown: use one of round_robin"):
        get_policy("fastest")
    with pytest.raises(ValueError, match="start at least one replica"):
        least_outstanding([], RouteRequest(1))
    with pytest.raises(ValueError, match="interactive"):
        headroom([snap()], RouteRequest(1, "gold"))


def test_prefill_rate_averages_prompt_steps_by_their_time():
    class Stats:
        def __init__(self, tokens, seconds):
            self.num_prefill_tokens, self.duration_s = tokens, seconds

    rate = PrefillRate(halflife_steps=1e9)  # no decay: the plain ratio of sums
    assert rate.tokens_per_s is None
    rate(Stats(0, 0.5))  # a decode-only step says nothing of the prompt rate
    rate(Stats(1000, 0.1))
    rate(Stats(3000, 0.9))
    assert rate.tokens_per_s == pytest.approx(4000 / 1.0)


def test_snapshot_reads_the_engine_state_and_the_policy_without_changing_them():
    queue = tuple((math.inf, 10, 0) for _ in range(PREFILL_QUEUE_LEN))
    state = EngineState(now_s=3.0, num_waiting=70, num_running=2, num_decodes=2, num_free_blocks=25,
                        num_total_blocks=100, block_size=16, admissible_free_tokens=0, admissible_kv_tokens=0,
                        running_prefill_tokens=0, waiting_prefill_tokens=700, prefill_queue=queue,
                        decode_tbt_slack_s=0.02)
    policy = FixedBudget(256, deadlines=TIERED)
    rate = PrefillRate()
    s = snapshot(state, policy, rate)
    assert s.overflow_tokens == 700 - 10 * PREFILL_QUEUE_LEN
    assert s.queued_prefill_tokens == 700
    assert (s.num_outstanding, s.kv_utilization, s.tbt_slack_s) == (72, 0.75, 0.02)
    assert s.prefill_rate_tps is None and not s.relegates_late and s.targets is TIERED
