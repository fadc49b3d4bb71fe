"""The registry, the baselines (two_level, slack) and the shared ladder search."""

from __future__ import annotations

import random

import pytest

from adaptive_sarathi.controller.adaptive import AdaptiveBudget
from adaptive_sarathi.controller.ladder import CandidateShapes, budget_ladder, candidate_shape, search_ladder
from adaptive_sarathi.engine.budget import FixedBudget, StepBudget
from adaptive_sarathi.controller.registry import POLICY_SPECS, PolicySpecError, make_policy
from adaptive_sarathi.controller.rolling_quantile import RollingQuantile
from adaptive_sarathi.controller.slack import SlackBudget
from adaptive_sarathi.controller.slo import BudgetBounds
from adaptive_sarathi.controller.synthetic import SyntheticStream
from adaptive_sarathi.controller.two_level import TwoLevelBudget
from adaptive_sarathi.engine.stats import EngineState

from policy_fixtures import SLO, TRUTH, state


def test_registry_builds_every_spec():
    assert make_policy("fixed:512").decide(state()) == StepBudget(512, None)
    assert make_policy("fixed:1024:256", SLO).decide(state()) == StepBudget(1024, 256)
    assert isinstance(make_policy("adaptive", SLO, prior=TRUTH), AdaptiveBudget)
    assert make_policy("adaptive", SLO, prior=TRUTH).online_model.prior == TRUTH
    two = make_policy("two_level:256:2048", SLO)
    assert isinstance(two, TwoLevelBudget) and (two.low, two.high) == (256, 2048)
    assert isinstance(make_policy("slack", SLO), SlackBudget)
    assert make_policy("adaptive", SLO, seed=5).seed == 5


@pytest.mark.parametrize("spec,needle", [
    ("fastest", "unknown policy 'fastest'"),
    ("fixed", "fixed takes a budget"),
    ("fixed:abc", "whole numbers"),
    ("fixed:0", ">= 1"),
    ("fixed:16384", "outside SLO policy"),
    ("fixed:512:8", "chunk bounds"),
    ("two_level:512", "low and a high"),
    ("two_level:2048:512", "must be below"),
    ("two_level:64:512", "outside the SLO policy"),
    ("adaptive:3", "takes no arguments"),
])
def test_registry_errors_name_the_spec_and_the_choices(spec: str, needle: str):
    with pytest.raises(PolicySpecError) as e:
        make_policy(spec, SLO)
    message = str(e.value)
    assert repr(spec) in message and needle in message
    assert all(choice in message for choice in POLICY_SPECS)


def test_learning_policies_need_an_slo():
    with pytest.raises(PolicySpecError, match="--slo-policy"):
        make_policy("adaptive")


def test_fixed_keeps_its_parameters():
    policy = FixedBudget(256, 128, seed=3)
    assert policy.get_params() == {"token_budget": 256, "max_chunk": 128, "seed": 3, "deadlines": None}
    assert repr(policy) == "FixedBudget(token_budget=256, max_chunk=128, seed=3, deadlines=None)"


def test_two_level_switches_with_hysteresis():
    policy = make_policy("two_level:512:2048", SLO)  # enter at 2048 waiting tokens, exit at 512
    quiet, busy, draining = (state(waiting_prefill_tokens=t, oldest_waiting_age_s=0.0) for t in (100, 3000, 1000))
    assert [policy.decide(s).token_budget for s in (quiet, busy, draining, draining, quiet, draining)] == [
        512, 2048, 2048, 2048, 512, 512]
    old = state(waiting_prefill_tokens=0, oldest_waiting_age_s=0.6 * SLO.ttft.target_s)
    assert policy.decide(old).token_budget == 2048  # a request waiting half its TTFT target also counts


def test_slack_with_a_prior_takes_the_largest_budget_whose_mean_fits_the_slack():
    policy = make_policy("slack", SLO, prior=TRUTH)
    s = state(num_decodes=64, num_running=65, decode_context_tokens=64 * 2048, waiting_prefill_tokens=50_000)
    budget = policy.decide(s).token_budget
    assert TRUTH.step_time(candidate_shape(s, budget, budget)) <= SLO.tbt.target_s
    bigger = budget + SLO.bounds.tile_tokens
    assert TRUTH.step_time(candidate_shape(s, bigger, bigger)) > SLO.tbt.target_s
    late = policy.decide(state(**{**s.__dict__, "max_decode_gap_s": 0.03})).token_budget
    assert late < budget  # less slack for the tightest decode


def test_slack_without_a_prior_fits_once_then_freezes():
    policy = SlackBudget(SLO, fit_steps=100)
    records = SyntheticStream(TRUTH, seed=1).run(policy, 300)
    assert all(r.budget.token_budget == SLO.bounds.fallback_token_budget
               for r in records[:100] if r.state.num_decodes)
    frozen = policy.coefficients
    assert frozen is not None and policy.coefficients == frozen
    shape = candidate_shape(state(), 1024, 1024)
    assert policy.step_time(shape) == pytest.approx(TRUTH.step_time(shape), rel=0.15)


def test_ladder_and_its_search_match_a_linear_scan():
    bounds = BudgetBounds(min_token_budget=64, max_token_budget=1000)
    ladder = budget_ladder(bounds, 128)
    assert ladder == (64, 128, 256, 384, 512, 640, 768, 896, 1000)
    rng = random.Random(0)
    for _ in range(500):
        floor, cap = rng.choice([64, 100, 300]), rng.choice([300, 640, 1000])
        limit = rng.uniform(0, 1200)
        hint = rng.choice([None, 64, 200, 512, 1000, 5000])
        candidates = (floor, *[r for r in ladder if floor < r <= cap])
        fitting = [b for b in candidates if b <= limit]
        expected = max(fitting) if fitting else floor
        assert search_ladder(ladder, floor, cap, float, limit, hint) == expected
        # Past flat_from every budget builds the same step: the same answer, only the first rung there timed.
        flat_from = rng.choice([1, 100, 300, 700, 5000])
        first_flat = next((b for b in candidates if b >= flat_from), candidates[-1])
        timed: list[int] = []

        def flat_time(b: int) -> float:
            timed.append(b)
            return float(min(b, first_flat))

        fitting = [b for b in candidates if min(b, first_flat) <= limit]
        expected = max(fitting) if fitting else floor
        assert search_ladder(ladder, floor, cap, flat_time, limit, hint, flat_from=flat_from) == expected
        assert len(timed) == len(set(timed)) and max(timed) <= first_flat


def test_rolling_quantile_matches_sorting():
    rng = random.Random(1)
    window = RollingQuantile(50)
    values: list[float] = []
    for _ in range(300):
        v = rng.random()
        window.update(v)
        values = (values + [v])[-50:]
        s = sorted(values)
        assert window.quantile(0.0) == s[0] and window.quantile(1.0) == s[-1] == window.max()
        pos = 0.9 * (len(s) - 1)
        i = int(pos)
        expected = s[i] if i == len(s) - 1 else s[i] + (s[i + 1] - s[i]) * (pos - i)
        assert window.quantile(0.9) == pytest.approx(expected)


def test_fixed_edf_stamps_the_slos_deadlines_and_plain_fixed_none():
    from adaptive_sarathi.controller.slo import load_slo_policy

    tiered = load_slo_policy("llama-3-8b-h100-tiered")
    edf = make_policy("fixed:1024:edf", tiered)
    assert edf.decide(None).token_budget == 1024 and edf.slo_targets() == tiered.as_targets()
    assert make_policy("fixed:1024:256:edf", tiered).budget.max_chunk == 256
    assert make_policy("fixed:1024", tiered).slo_targets() is None
    with pytest.raises(PolicySpecError, match="edf orders requests"):
        make_policy("fixed:1024:edf")


def test_set_slo_rebuilds_the_baselines_from_the_new_policy():
    from dataclasses import replace

    from adaptive_sarathi.controller.slo import LatencyTarget

    narrow = replace(SLO, name="narrow", bounds=BudgetBounds(min_token_budget=64, max_token_budget=1024,
                                                           fallback_token_budget=128))
    two = make_policy("two_level", SLO)  # default levels: derived from the policy's bounds
    assert two.decide(state(waiting_prefill_tokens=0)).token_budget == SLO.bounds.fallback_token_budget
    two.set_slo(narrow)
    assert two.slo is narrow and two.decide(state(waiting_prefill_tokens=0)).token_budget == 128
    explicit = make_policy("two_level:512:2048", SLO)
    with pytest.raises(ValueError, match="outside the SLO policy 'narrow'"):
        explicit.set_slo(narrow)
    assert explicit.slo is SLO  # a refused policy changes nothing

    slack = make_policy("slack", SLO, prior=TRUTH)
    s = state(num_decodes=64, num_running=65, decode_context_tokens=64 * 2048, waiting_prefill_tokens=50_000)
    before = slack.decide(s).token_budget
    slack.set_slo(replace(SLO, name="tight", tbt=LatencyTarget(SLO.tbt.target_ms / 2), classes=()))
    after = slack.decide(s).token_budget
    assert after < before and TRUTH.step_time(candidate_shape(s, after, after)) <= SLO.tbt.target_s / 2


def test_fixed_budget_set_slo_stamps_the_new_deadlines():
    policy = FixedBudget(256, deadlines=SLO.as_targets())
    tight = SLO.__class__(name="t", ttft=SLO.ttft.__class__(500.0), tbt=SLO.tbt)
    policy.set_slo(tight)
    assert policy.slo_targets() == tight.as_targets() and policy.slo_targets().ttft_s == 0.5
    assert policy.decide(state()) == StepBudget(256, None)


def test_candidate_shapes_match_candidate_shape_with_the_chunk_unbounded():
    rng = random.Random(2)
    for _ in range(500):
        queue = tuple((rng.random(), rng.choice([0, 1, 5, 300, 2000]), rng.choice([0, 16, 4096]))
                      for _ in range(rng.choice([0, 1, 3, 64])))
        listed = sum(pending for _, pending, _ in queue)
        decodes = rng.choice([0, 1, 20, 300])
        s = EngineState(now_s=1.0, num_waiting=len(queue), num_running=decodes + 1, num_decodes=decodes,
                        num_free_blocks=100, num_total_blocks=200, block_size=16, admissible_free_tokens=1000,
                        admissible_kv_tokens=3000, decode_context_tokens=decodes * 500,
                        running_prefill_tokens=listed // 2,
                        waiting_prefill_tokens=listed - listed // 2 + rng.choice([0, 10, 5000]), prefill_queue=queue)
        shapes = CandidateShapes(s)
        for budget in (1, 16, max(decodes, 1), decodes + 1, 128, 512, 2048, 8192):
            assert shapes(budget) == candidate_shape(s, budget, budget - min(decodes, budget))
