"""The adaptive policy on hand-made states: its TBT cap, the KV limit, relegation, admission, and
decisions that noise does not flip."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from adaptive_sarathi.controller.adaptive import AdaptiveBudget, steady_latency_model
from adaptive_sarathi.controller.ladder import candidate_shape
from adaptive_sarathi.controller.synthetic import SyntheticStream

from policy_fixtures import SLO, TRUTH, state

TTFT_S = SLO.ttft.target_s
BOUNDS = SLO.bounds


def policy(**params) -> AdaptiveBudget:
    return AdaptiveBudget(SLO, steady_latency_model(TRUTH, BOUNDS.tile_tokens), **params)


def queued(now: float, *entries: tuple[float, int], decodes: int = 16, **fields):
    """A state at `now` whose prefill queue is `entries` (age in s, pending tokens), all waiting and
    due by the SLO's TTFT target, as the engine stamps them."""
    queue = tuple((now - age + TTFT_S, tokens, 0) for age, tokens in entries)
    return state(now_s=now, num_decodes=decodes, num_running=decodes, decode_context_tokens=decodes * 1024,
                 running_prefill_tokens=0, num_waiting=len(queue), waiting_prefill_tokens=sum(t for _, t, _ in queue),
                 oldest_waiting_age_s=max((age for age, _ in entries), default=0.0), prefill_queue=queue, **fields)


def test_the_budget_is_the_largest_rung_whose_tail_keeps_the_tbt_target():
    p = policy()
    s = queued(10.0, (0.0, 20_000))  # a queue whose deadline is far: prefill still runs at the cap
    budget = p.decide(s).token_budget
    d = p.last_decision
    assert d.reason == "tbt" and budget == d.tbt_budget
    ratio = p.online_model.tail_ratio(SLO.tbt.quantile)
    limit = (1 - p.margin) * SLO.tbt.target_s

    def tail_s(b: int) -> float:
        return p.online_model.step_time(candidate_shape(s, b, b - s.num_decodes)) * ratio

    assert tail_s(budget) <= limit
    larger = min(b for b in p._ladder if b > budget)
    assert tail_s(larger) > limit  # one rung more would break the TBT target
    assert d.predicted_s == pytest.approx(tail_s(budget) / ratio)
    # The step relegates nothing that can still make it: only requests past their deadline.
    assert d.budget.relegate_before_s == pytest.approx(10.0 + TRUTH.step_time(candidate_shape(s, 16, 0)), rel=0.05)


def test_a_full_kv_cache_limits_the_prompt_a_step_takes():
    p = policy()
    roomy = p.decide(queued(10.0, (0.5, 20_000)))
    tokens = 300 + 16 * 2  # room for 300 prompt tokens past the decodes' growth
    tight = p.decide(queued(10.0, (0.5, 20_000), num_total_blocks=10_000, admissible_free_tokens=tokens))
    assert p.last_decision.reason == "kv" and p.last_decision.tbt_budget == roomy.token_budget
    assert tight.token_budget == 16 + 300 and tight.chunk_limit == 300


def test_decisions_do_not_flip_with_ten_percent_timing_noise():
    """Three policies taught the same stream under different draws of 10% timing noise choose, for
    the same states, steps whose true times agree within 15% (near the TBT cap one 128-token rung
    is about 5% of a step): noise moves the fit a little, never the regime."""
    states = [queued(10.0, (1.0, 3000)), queued(10.0, (TTFT_S - 0.3, 8000), (0.5, 2000)),
              queued(10.0, (0.2, 500), decodes=128), queued(10.0, (TTFT_S - 0.4, 6000))]
    times = []
    for seed in (1, 2, 3):
        p = policy()
        SyntheticStream(TRUTH, seed=seed, noise=0.1).run(p, 400)
        times.append([TRUTH.step_time(candidate_shape(s, b := p.decide(s).token_budget, b - s.num_decodes))
                      for s in states])
    for per_state in zip(*times):
        assert max(per_state) <= 1.15 * min(per_state), per_state


def test_candidate_steps_price_chunks_at_their_prefix_depth():
    """A running prefill 3,000 tokens in attends to that prefix: the candidate step counts it, and
    the next request's chunk after it, in queue order, at most `chunk` tokens each."""
    s = state(num_decodes=2, num_running=3, decode_context_tokens=2 * 100, running_prefill_tokens=500,
              num_waiting=1, waiting_prefill_tokens=800, prefill_queue=((1.0, 500, 3000), (2.0, 800, 0)))
    shape = candidate_shape(s, 2 + 700, 600)
    assert (shape.num_prefill_tokens, shape.num_prefill_seqs) == (700, 2)
    assert shape.sum_context_tokens == 2 * 100 + (3000 + 500) + 200
    assert shape.decode_context_tokens == 2 * 100


def test_admits_new_requests_only_while_the_queue_ahead_can_be_served_in_time():
    p = policy()
    calm = queued(10.0, (0.1, 1000))
    p.decide(calm)
    rate = p._drain_tps
    assert rate > 0 and p.admits(calm, 1000)
    due = (1 - p.margin) * TTFT_S
    # A queue that alone takes longer than the target at the cap's rate: refused.
    full = queued(10.0, (0.1, int(rate * due) + 1))
    assert not p.admits(full, 1)
    # Requests past their deadline wait behind new ones: they do not count against admission.
    late = queued(10.0, (TTFT_S + 1.0, int(rate * due) + 1))
    assert p.admits(late, 1000)


def test_admission_counts_only_the_queue_due_before_the_new_request():
    """A deep queue of a looser class (due later than the new request) is served after it in the
    deadline order, so it does not refuse the new request; a request due sooner does."""
    p = policy()
    p.decide(queued(10.0, (0.1, 1000)))
    due = (1 - p.margin) * TTFT_S
    deep = int(p._drain_tps * due) + 1
    later = queued(10.0, (0.0, 1))
    later = replace(later, prefill_queue=((10.0 + 10 * TTFT_S, deep, 0),), waiting_prefill_tokens=deep)
    assert p.admits(later, 1000)
    sooner = replace(later, prefill_queue=((10.0 + TTFT_S / 2, deep, 0),))
    assert not p.admits(sooner, 1)
    recompute = replace(later, prefill_queue=((math.inf, deep, 0),))  # a preempted request: queued first
    assert not p.admits(recompute, 1)


def test_admission_is_open_before_any_plan():
    assert policy().admits(queued(10.0, (0.1, 10**9)), 1)


def test_relaxed_decodes_allow_longer_steps_than_an_interactive_one():
    """The TBT cap follows the tightest running decode's own slack: with only decodes of a relaxed
    class (500 ms) in flight the step may last far longer than with one interactive decode."""
    p = policy()
    p.decide(queued(10.0, (0.5, 20_000), decode_tbt_slack_s=SLO.tbt.target_s))
    interactive = p.last_decision.tbt_budget
    p.decide(queued(10.0, (0.5, 20_000), decode_tbt_slack_s=0.5))
    assert p.last_decision.tbt_budget > interactive
    assert p.last_decision.tbt_budget >= 4 * interactive or p.last_decision.tbt_budget == BOUNDS.max_token_budget


def test_set_slo_replans_at_once_against_a_tighter_tbt_and_keeps_the_model():
    from adaptive_sarathi.controller.slo import LatencyTarget

    p = policy()
    s = queued(10.0, (TTFT_S - 0.05, 200_000))  # overload: the budget is the TBT cap
    before = p.decide(s)
    ratio = p.online_model.tail_ratio(SLO.tbt.quantile)
    tight = replace(SLO, name="tighter", tbt=LatencyTarget(30.0, SLO.tbt.percentile), classes=())
    limit = (1 - p.margin) * tight.tbt.target_s
    assert p.last_decision.predicted_s * ratio > limit  # the old budget would break the new target
    model = p.online_model
    p.set_slo(tight)
    after = p.decide(s)
    assert p.online_model is model  # what was learned is kept
    assert after.token_budget < before.token_budget
    assert 0 < p.last_decision.predicted_s * ratio <= limit
    assert p.slo_targets() == tight.as_targets() and p.slo_targets().tbt_s == pytest.approx(0.030)


def test_a_planned_budget_carries_its_predicted_step_time_and_a_fallback_none():
    p = policy()
    s = queued(10.0, (0.0, 20_000))
    budget = p.decide(s)
    assert budget.predicted_duration_s == pytest.approx(p.last_decision.predicted_s) and budget.predicted_duration_s > 0
    unsure = AdaptiveBudget(SLO)  # no prior, no steps: the fallback budget, nothing predicted
    fallback = unsure.decide(s)
    assert fallback.reason == "unsure" and fallback.predicted_duration_s is None
    assert unsure.latency_model_error().num_predictions == 0
