"""The adaptive policy on synthetic states and streams: the TBT constraint, pressure, fallback, loop."""

from __future__ import annotations

import random

from adaptive_sarathi.controller.adaptive import AdaptiveBudget
from adaptive_sarathi.controller.ladder import candidate_shape
from adaptive_sarathi.controller.latency_model import OnlineLatencyModel
from adaptive_sarathi.controller.synthetic import SyntheticStream

from policy_fixtures import SLO, TRUTH, state, stats

TARGET_S = SLO.tbt.target_s
BOUNDS = SLO.bounds
QUEUE = dict(num_waiting=8, waiting_prefill_tokens=10_000)  # more prefill than these tests' budgets


def trained(with_prior: bool = True, steps: int = 400, **params) -> AdaptiveBudget:
    policy = AdaptiveBudget(SLO, OnlineLatencyModel(prior=TRUTH if with_prior else None), **params)
    SyntheticStream(TRUTH, seed=1).run(policy, steps)
    return policy


def heavy(**fields):
    """128 decodes with 4k-token contexts: they alone take about half the TBT target."""
    return state(**{"num_decodes": 128, "num_running": 129, "decode_context_tokens": 128 * 4096, **QUEUE, **fields})


def light(**fields):
    """8 decodes with 512-token contexts."""
    return state(**{"num_decodes": 8, "num_running": 9, "decode_context_tokens": 8 * 512, **QUEUE, **fields})


def test_no_decodes_means_the_max_bound():
    policy = AdaptiveBudget(SLO)  # no prior, no observation: the TBT constraint does not bind anyway
    budget = policy.decide(state(num_decodes=0, num_running=0, decode_context_tokens=0, **QUEUE))
    assert budget.token_budget == BOUNDS.max_token_budget
    assert policy.last_decision.reason == "no_decodes"


def rate(state, budget: int) -> float:
    """True tokens per second of the step `budget` would build from `state`."""
    shape = candidate_shape(state, budget, budget)
    return shape.num_tokens / TRUTH.step_time(shape)


def test_long_context_decodes_lower_the_budget_so_the_tail_fits():
    policy = trained()
    small = policy.decide(heavy())
    heavy_decision = policy.last_decision
    large = policy.decide(light())
    assert heavy_decision.reason == policy.last_decision.reason == "model"
    assert heavy_decision.tbt_budget < policy.last_decision.tbt_budget
    assert BOUNDS.min_token_budget <= small.token_budget <= heavy_decision.tbt_budget
    assert large.token_budget <= policy.last_decision.tbt_budget
    # tbt_budget is the largest whose predicted tail fits the planned gap less the margin: one tile
    # more does not.
    model, q, s = policy.online_model, SLO.tbt.quantile, heavy()
    top = heavy_decision.tbt_budget
    fits = (1 - policy.tbt_margin) * heavy_decision.planned_gap_s
    assert model.predict_tail(candidate_shape(s, top, top - 128), q) <= fits
    bigger = top + BOUNDS.tile_tokens
    assert model.predict_tail(candidate_shape(s, bigger, bigger - 128), q) > fits
    assert small.token_budget <= top and heavy_decision.predicted_tail_s <= heavy_decision.planned_gap_s
    # And the truth agrees: the mean step at that budget is within the TBT target.
    assert TRUTH.step_time(candidate_shape(s, top, top)) < TARGET_S


def with_lengths(policy: AdaptiveBudget, steps: int = 64) -> AdaptiveBudget:
    """Feed steps in which one prompt finishes each (512 prefill + 16 decode tokens), so the
    policy knows the workload's prompt and output lengths (its flow budget is set)."""
    for _ in range(steps):
        policy.observe(stats(first_token_latencies_s=(0.1,)))
    return policy


def test_without_pressure_the_budget_stays_at_the_knee():
    policy = trained(pressure_gain=0.0)
    s = light(oldest_waiting_age_s=0.0)
    budget = policy.decide(s).token_budget
    d = policy.last_decision
    assert budget <= d.knee_budget <= d.tbt_budget
    model = policy.online_model
    alone = model.step_time(candidate_shape(s, 128, 120))
    assert model.step_time(candidate_shape(s, d.knee_budget, d.knee_budget - 8)) <= (1 + policy.knee_slack) * alone
    past = d.knee_budget + BOUNDS.tile_tokens
    assert model.step_time(candidate_shape(s, past, past - 8)) > (1 + policy.knee_slack) * alone
    # And the truth agrees: prefill up to the knee costs the decodes little.
    assert TRUTH.step_time(candidate_shape(s, budget, budget)) < 1.3 * TRUTH.step_time(candidate_shape(s, 128, 120))


def test_flow_budget_refills_the_decode_pool_a_full_cache_holds():
    policy = with_lengths(trained(), steps=3000)  # long enough to forget the training stream
    s = heavy(num_free_blocks=100)  # a full cache: nothing free above the 1% watermark
    policy.decide(s)
    d = policy.last_decision
    # 512 prompt and 16 decode tokens per finished request; the cache holds 10000 blocks of 16.
    prompt, output = 512, 16
    pool = (10000 - 100) * 16 / (prompt + output / 2)  # the scheduler reserves floor(1%) of the blocks
    assert abs(d.flow_budget - (128 + prompt * pool / output)) < 0.05 * d.flow_budget
    fresh = AdaptiveBudget(SLO, OnlineLatencyModel(prior=TRUTH))
    for _ in range(100):  # steps in which no request finishes
        fresh.observe(stats())
    fresh.decide(s)
    assert fresh.last_decision.reason == "model"
    assert fresh.last_decision.flow_budget == 0  # lengths unknown until enough requests finish


def test_spare_kv_room_is_filled_over_one_output_length():
    policy = with_lengths(trained(), steps=3000)
    full = policy.decide(heavy(num_free_blocks=100)) and policy.last_decision.flow_budget
    roomy = policy.decide(heavy(num_free_blocks=5000)) and policy.last_decision.flow_budget
    # 4900 blocks above the watermark, less one 16-token output for each of the 128 decodes.
    room = 4900 * 16 - 128 * 16
    assert abs(roomy - full - room / 16) <= 0.02 * room / 16
    # Decodes that will still grow into the free blocks leave no spare room.
    crowded = policy.decide(heavy(num_free_blocks=200, num_decodes=5000, num_running=5000)) and \
        policy.last_decision.flow_budget
    assert crowded - 5000 <= full - 128


def test_calm_queue_and_long_outputs_run_the_flow_balance_below_the_knee():
    """Long outputs: a cache they fill needs little prefill to stay refilled. With a calm queue the
    budget is that flow balance, not the knee (past the point where compute catches up with the
    memory-bound decodes every extra token slows the decodes, which set the rate)."""
    policy = trained()
    for k in range(3000):  # 128 decodes; one 128-token prompt per 16 steps: outputs of 2048 tokens
        policy.observe(stats(num_decode_tokens=128, num_prefill_tokens=8,
                             first_token_latencies_s=(0.1,) if k % 16 == 0 else ()))
    # Half the cache is free, but the running decodes will grow into all of it (no spare room).
    calm = dict(oldest_waiting_age_s=0.0, running_prefill_tokens=0, waiting_prefill_tokens=0, num_waiting=0)
    budget = policy.decide(heavy(**calm)).token_budget
    d = policy.last_decision
    assert d.pressure == 0 and 0 < d.flow_budget < d.knee_budget
    assert budget < d.knee_budget and budget <= max(d.flow_budget, BOUNDS.clamp_budget(128))
    # Under pressure with room in the cache, the knee at least.
    pressed = policy.decide(heavy(oldest_waiting_age_s=0.95 * SLO.ttft.target_s)).token_budget
    assert policy.last_decision.pressure > 0.9 and pressed >= policy.last_decision.knee_budget


def test_output_length_counts_only_finished_requests():
    """In a ramp the decode pool grows: prefills finish faster than requests do. The output length
    is decode tokens per finished request (requests still decoding would make outputs look short
    and the flow budget several times too large)."""
    # A prior makes the model usable at once; no decay, so the token sums below are exact.
    policy = AdaptiveBudget(SLO, OnlineLatencyModel(prior=TRUTH), length_window_steps=10**9)
    # 40 steps, one prefill (512 tokens) finishing each; the pool grows to 20 decodes, then holds
    # (one request leaves per step): 20 finished, 210 + 20 x 20 = 610 decode tokens.
    for k in range(1, 41):
        policy.observe(stats(num_decode_tokens=min(k, 20), first_token_latencies_s=(0.1,)))
    policy.decide(heavy(num_free_blocks=100))
    assert policy.last_decision.reason == "model"
    prompt, output = 512, 610 / 20  # not 610 / 40
    pool = (10000 - 100) * 16 / (prompt + output / 2)  # the scheduler reserves floor(1%) of the blocks
    assert abs(policy.last_decision.flow_budget - (128 + prompt * pool / output)) <= 1


def test_decodes_always_run_and_a_late_decode_shrinks_the_step():
    policy = trained()
    assert policy.decide(heavy(num_decodes=5000, num_running=5000)).token_budget >= 5000
    policy.decide(heavy())
    on_time = policy.last_decision.tbt_budget
    late = policy.decide(heavy(max_decode_gap_s=0.02)).token_budget
    assert late <= policy.last_decision.tbt_budget < on_time
    assert policy.decide(heavy(max_decode_gap_s=TARGET_S)).token_budget == 128  # only the decodes


def test_a_long_queue_leans_to_more_prefill_within_the_tbt_target():
    policy = with_lengths(trained())
    calm = policy.decide(heavy(oldest_waiting_age_s=0.0, waiting_prefill_tokens=0, num_waiting=0,
                               running_prefill_tokens=800)).token_budget
    assert policy.last_decision.pressure < 0.2
    pressed = policy.decide(heavy(oldest_waiting_age_s=0.95 * SLO.ttft.target_s)).token_budget
    decision = policy.last_decision
    assert decision.pressure > 0.9 and calm < pressed <= decision.tbt_budget
    assert pressed <= max(decision.knee_budget, int(policy.flow_headroom * decision.flow_budget))
    assert decision.predicted_tail_s <= TARGET_S
    # ... but never more prompt tokens than the free KV cache takes: a chunk that does not fit
    # waits at the head of the queue, and a running prefill's chunk would preempt decodes.
    full = policy.decide(heavy(oldest_waiting_age_s=0.95 * SLO.ttft.target_s, num_free_blocks=150))
    d = policy.last_decision
    room = (150 - 100) * 16 - 128 * policy.kv_horizon_steps
    assert d.kv_budget == 128 + max(room, 0)
    assert full.token_budget <= max(d.kv_budget, BOUNDS.clamp_budget(128)) < pressed
    assert full.chunk_limit <= max(room, BOUNDS.min_chunk)


def test_under_pressure_the_flow_balance_gets_headroom_to_drain_the_queue():
    """The flow budget is a steady-state rate: a queue that has built up needs more to drain."""
    budgets = {}
    for headroom in (1.0, 2.0):
        policy = trained(flow_headroom=headroom)
        for k in range(3000):  # 128 decodes; one 128-token prompt per 3 steps: outputs of 384 tokens
            policy.observe(stats(num_decode_tokens=128, num_prefill_tokens=43,
                                 first_token_latencies_s=(0.1,) if k % 3 == 0 else ()))
        budgets[headroom] = policy.decide(heavy(oldest_waiting_age_s=0.95 * SLO.ttft.target_s)).token_budget
        d = policy.last_decision
        assert d.pressure > 0.9 and d.knee_budget < d.flow_budget
        assert budgets[headroom] <= min(d.tbt_budget, int(headroom * d.flow_budget))
    assert budgets[2.0] > budgets[1.0]


def test_short_prompts_behind_a_long_prefill_get_part_of_the_room():
    policy = trained()
    queue = dict(num_decodes=16, num_running=17, running_prefill_tokens=30_000, num_waiting=8,
                 waiting_prefill_tokens=4_000, oldest_waiting_age_s=0.8 * SLO.ttft.target_s)
    shared = policy.decide(state(**queue))
    assert shared.chunk_limit < shared.token_budget - 16  # the running prefill leaves room for the queue
    longer = policy.decide(state(**{**queue, "waiting_prefill_tokens": 400_000}))
    assert longer.chunk_limit == min(longer.token_budget - 16, BOUNDS.max_chunk)  # no reason to share


def test_fallback_until_the_model_is_sure_and_when_telemetry_stalls():
    policy = AdaptiveBudget(SLO, stall_decisions=8)
    assert policy.decide(light()).token_budget == BOUNDS.fallback_token_budget
    assert policy.last_decision.reason == "unsure"
    SyntheticStream(TRUTH, seed=2).run(policy, 300)
    policy.decide(light())
    assert policy.last_decision.reason == "model"
    for _ in range(7):
        policy.decide(light())
    assert policy.last_decision.reason == "model"
    assert policy.decide(light()).token_budget == BOUNDS.fallback_token_budget  # the 9th without observe()
    assert policy.last_decision.reason == "stalled"
    policy.observe(stats())
    policy.decide(light())
    assert policy.last_decision.reason == "model"


def test_fallback_when_the_recent_error_is_large():
    policy = trained(with_prior=False)
    rng = random.Random(0)
    for _ in range(40):  # another tenant makes step times erratic: 0.2x to 5x what they were
        policy.decide(light())
        s = stats()
        policy.observe(stats(duration_s=s.duration_s * rng.choice([0.2, 5.0])))
    assert not policy.online_model.is_confident
    assert policy.decide(light()).token_budget == BOUNDS.fallback_token_budget
    assert policy.last_decision.reason == "unsure"


def test_closed_loop_tightens_when_observed_gaps_exceed_the_plan():
    policy = trained()
    policy.decide(heavy())
    before = policy.last_decision.tbt_budget
    for _ in range(100):  # the engine adds 40% to every planned gap (overhead outside the step)
        policy.decide(heavy())
        policy.observe(stats(max_token_gap_s=1.4 * policy.last_decision.planned_gap_s))
    assert abs(policy.tbt_factor - 1 / 1.4) < 0.02
    policy.decide(heavy())
    assert policy.last_decision.tbt_budget < before
    assert policy.last_decision.planned_gap_s * 1.4 <= TARGET_S * 1.01


def test_closed_loop_on_ttft_raises_pressure():
    policy = trained()
    short_queue = heavy(oldest_waiting_age_s=0.3, waiting_prefill_tokens=1000)
    policy.decide(short_queue)
    calm = policy.last_decision.pressure
    assert 0 < calm < 0.5
    for _ in range(64):
        policy.observe(stats(first_token_latencies_s=(2 * SLO.ttft.target_s,)))
    assert abs(policy.ttft_factor - 0.5) < 0.01
    policy.decide(short_queue)
    assert policy.last_decision.pressure > 1.5 * calm


def test_keeps_the_tbt_slo_and_beats_the_fallback_budget_on_a_stream():
    policy = AdaptiveBudget(SLO)
    records = SyntheticStream(TRUTH, seed=4, arrival_rate_per_s=20.0).run(policy, 3000)[500:]
    gaps = sorted(r.stats.max_token_gap_s for r in records if r.stats.max_token_gap_s > 0)
    assert gaps[int(0.99 * (len(gaps) - 1))] <= TARGET_S
    busy = [r.budget.token_budget for r in records if r.state.num_decodes]
    assert sum(busy) / len(busy) > 2 * BOUNDS.fallback_token_budget
