"""The adaptive budget policy: each step, a budget whose predicted tail time keeps the TBT SLO,
between the knee of the step-time curve and the KV cache's flow balance: the lesser of the two when
the waiting queue is calm, the greater when it presses."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from adaptive_sarathi.controller.closed_loop import QuantileFeedback
from adaptive_sarathi.controller.ladder import budget_ladder, candidate_shape, ladder_candidates, last_true
from adaptive_sarathi.controller.latency_model import OnlineLatencyModel
from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.stats import EngineState, StepStats


@dataclass(frozen=True)
class Decision:
    """Why the last budget was chosen. reason: "model" (the ladder search), "no_decodes" (no TBT
    constraint: the max bound), "unsure" or "stalled" (the fallback budget). Times in seconds;
    budgets in tokens (0 when not searched)."""

    budget: StepBudget
    reason: str
    pressure: float  # queue pressure, 0..1, after the KV-headroom scaling
    planned_gap_s: float  # the token gap budgeted for the tightest decode
    predicted_tail_s: float  # the model's tail time of the chosen step
    tbt_budget: int  # the largest budget whose tail fits the planned gap less the tbt_margin
    knee_budget: int = 0  # the largest budget whose step costs at most knee_slack more than the decodes alone
    kv_budget: int = 0  # decodes + the prompt tokens the free KV cache can take this step (0: no telemetry)
    flow_budget: int = 0  # decodes + the prefill that refills the KV cache as requests finish (0: lengths unknown)


class AdaptiveBudget(BudgetPolicy):
    """Sarathi-Serve's budget, chosen every step instead of once per deployment.

    Principle: the largest step is the one whose predicted tail time still keeps the TBT target
    for the tightest decode in flight (tbt_budget, less a tbt_margin for what the model cannot
    see); below it lie two cheaper references. The knee: decode steps are memory-bound, so prefill
    rides along almost free until the step costs knee_slack more than the decodes alone; past it
    every prefill token slows every decode. The flow balance: once the cache is the limit, about
    D / O requests finish per step (D decodes the cache holds, O the mean output length) and each
    needs P prompt tokens to be replaced, so decodes + (P x D + spare room) / O prefill keeps the
    cache full without overfilling it (see _flow_budget). With a calm queue the policy runs the
    lesser of knee and flow; under queue pressure it moves toward the greater (the flow with
    flow_headroom, since a built-up queue needs more than the steady rate to drain), capped by
    tbt_budget. Until requests have finished (lengths unknown) both are the knee.

    Queue pressure (0..1) is the oldest wait plus the time to clear pending prefill at the knee's
    pace, over the queue-delay target (the TTFT target, at most max_queue_delay_s); it is scaled
    down once free KV falls below kv_reserve of the cache, since admitting into a full cache only
    causes preemption. The step and the chunk never exceed the KV room: the engine state's
    admissible free tokens (above the scheduler's admission watermark) less kv_horizon_steps
    tokens per running decode. Short prompts waiting behind long running prefills keep up to
    max_waiting_share x pressure of the prefill room. With no decodes the max bound is used.

    tbt_factor and ttft_factor close the loop on observed token gaps and TTFTs (QuantileFeedback,
    last feedback_window samples). The SLO's fallback budget is used while the latency model is
    unsure and when more than stall_decisions decisions pass without observe(); the budget grows
    at most explore_growth x beyond the largest step seen.

    Deployment facts (block size, watermark, cache size) come from the EngineState, never from the
    constructor. `latency_model` is an unfitted template (default OnlineLatencyModel()); the
    policy learns on a clone, `online_model`. No random numbers are drawn; `seed` is kept for the
    common signature. Measured results of these choices: experiments/results/capacity_comparison.md.
    """

    def __init__(self, slo: SLOPolicy, latency_model: OnlineLatencyModel | None = None,
                 tile_tokens: int | None = None, tbt_margin: float = 0.05, pressure_gain: float = 1.0,
                 flow_headroom: float = 2.0, knee_slack: float = 0.15, max_queue_delay_s: float = 2.0, kv_reserve: float = 0.25,
                 kv_horizon_steps: int = 2,
                 length_window_steps: int = 256, min_length_samples: int = 8, max_waiting_share: float = 0.5,
                 explore_growth: float = 2.0, stall_decisions: int = 8, feedback_window: int = 256,
                 min_feedback_factor: float = 0.5, seed: int = 0):
        checks = {"tbt_margin": 0 <= tbt_margin < 1, "pressure_gain": pressure_gain >= 0,
                  "flow_headroom": flow_headroom >= 1, "knee_slack": knee_slack >= 0, "max_queue_delay_s": max_queue_delay_s > 0,
                  "kv_reserve": kv_reserve >= 0, "kv_horizon_steps": kv_horizon_steps >= 0,
                  "length_window_steps": length_window_steps >= 1,
                  "min_length_samples": min_length_samples >= 1,
                  "max_waiting_share": 0 <= max_waiting_share <= 1,
                  "explore_growth": explore_growth >= 1, "stall_decisions": stall_decisions >= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"AdaptiveBudget: invalid {', '.join(f'{n}={locals()[n]!r}' for n in bad)}; it needs "
                             "0 <= tbt_margin < 1, pressure_gain >= 0, flow_headroom >= 1, knee_slack >= 0, "
                             "max_queue_delay_s > 0, "
                             "kv_reserve >= 0, kv_horizon_steps >= 0, "
                             "length_window_steps >= 1, min_length_samples >= 1, "
                             "0 <= max_waiting_share <= 1, explore_growth >= 1 and stall_decisions >= 1")
        self.slo = slo
        self.latency_model = latency_model
        self.tile_tokens = tile_tokens
        self.tbt_margin = tbt_margin
        self.pressure_gain = pressure_gain
        self.flow_headroom = flow_headroom
        self.knee_slack = knee_slack
        self.max_queue_delay_s = max_queue_delay_s
        self.kv_reserve = kv_reserve
        self.kv_horizon_steps = kv_horizon_steps
        self.length_window_steps = length_window_steps
        self.min_length_samples = min_length_samples
        self.max_waiting_share = max_waiting_share
        self.explore_growth = explore_growth
        self.stall_decisions = stall_decisions
        self.feedback_window = feedback_window
        self.min_feedback_factor = min_feedback_factor
        self.seed = seed

        self.online_model = latency_model.clone() if latency_model is not None else OnlineLatencyModel()
        bounds = slo.bounds
        self._ladder = budget_ladder(bounds, tile_tokens or bounds.tile_tokens)
        self._tbt = slo.tightest_tbt
        self._ttft = slo.tightest_ttft
        self._tbt_feedback = QuantileFeedback(self._tbt.quantile, feedback_window, min_factor=min_feedback_factor)
        self._ttft_feedback = QuantileFeedback(self._ttft.quantile, feedback_window, min_factor=min_feedback_factor)
        self._fallback = StepBudget(bounds.fallback_token_budget, bounds.clamp_chunk(bounds.fallback_token_budget))
        self._largest_step = 0
        self._prefill_tokens = self._decode_tokens = self._firsts = self._decode_growth = 0.0
        self._last_decodes = 0
        self._since_observe = 0
        self._hints: tuple[int | None, int | None] = (None, None)  # where the two ladder searches start
        self.last_decision: Decision | None = None

    # -- decide -------------------------------------------------------------------------------

    def decide(self, state: EngineState) -> StepBudget:
        self._since_observe += 1
        bounds = self.slo.bounds
        if self._since_observe > self.stall_decisions:
            return self._record(self._fallback, "stalled", self._age_pressure(state), self._tbt.target_s)
        if state.num_decodes == 0:
            top = bounds.max_token_budget
            pressure = self._age_pressure(state)
            return self._record(StepBudget(top, self._chunk(state, top, pressure)), "no_decodes", pressure, 0.0)
        if not self.online_model.is_confident:
            return self._record(self._fallback, "unsure", self._age_pressure(state), self._tbt.target_s)

        planned = self._tbt.target_s * self._tbt_feedback.factor
        floor = bounds.clamp_budget(state.num_decodes)
        cap = max(floor, bounds.clamp_budget(int(max(self._largest_step, self._fallback.token_budget)
                                                 * self.explore_growth)))
        candidates = ladder_candidates(self._ladder, floor, cap)
        memo: dict[int, tuple[int, float]] = {}

        def step(budget: int) -> tuple[int, float]:
            """(tokens, predicted mean seconds) of the step `budget` would build."""
            if budget not in memo:
                shape = candidate_shape(state, budget, budget - min(state.num_decodes, budget))
                memo[budget] = (shape.num_tokens, self.online_model.step_time(shape))
            return memo[budget]

        ratio = self.online_model.tail_ratio(self._tbt.quantile)
        limit = (1.0 - self.tbt_margin) * (planned - state.max_decode_gap_s)
        top_i = max(0, last_true(candidates, lambda b: step(b)[1] * ratio <= limit, self._hints[0]))
        top = knee = candidates[top_i]
        if top_i > 0:
            knee_s = (1.0 + self.knee_slack) * step(floor)[1]
            knee = candidates[max(0, last_true(candidates[:top_i + 1], lambda b: step(b)[1] <= knee_s,
                                               self._hints[1]))]
        pressure = self._pressure(state, *step(knee))
        flow = self._flow_budget(state)
        # Once the workload's lengths are known: under queue pressure the flow balance with headroom
        # or, when it is below the knee, the knee (prefill up to it is almost free); calm, the lesser
        # of knee and flow.
        upper = min(top, max(knee, int(self.flow_headroom * flow))) if flow else knee
        lower = min(knee, max(floor, flow)) if flow else knee
        target = lower + min(1.0, self.pressure_gain * pressure) * (upper - lower)
        budget = max(lower, self._ladder[bisect.bisect_right(self._ladder, target) - 1])
        kv_room = self._kv_room(state)
        chunk = self._chunk(state, budget, pressure)
        kv_budget = 0
        if kv_room is not None:
            # A chunk larger than the free cache cannot be admitted (the scheduler waits, head of
            # line, until enough blocks free up, then takes it in one burst) and a running prefill's
            # chunk preempts decodes to find blocks: both waste steps. Feed the cache as it frees.
            kv_budget = max(floor, state.num_decodes + kv_room)
            budget = min(budget, kv_budget)
            chunk = min(chunk, self.slo.bounds.clamp_chunk(max(1, kv_room)))
        self._hints = (top, knee)
        return self._record(StepBudget(budget, chunk), "model", pressure, planned,
                            step(budget)[1] * ratio, top, knee, kv_budget, flow)

    def _flow_budget(self, state: EngineState) -> int:
        """Decodes + (P x D + R) / O prompt tokens, where P and O are the recent mean prompt and
        output lengths, D = the KV cache's tokens / (P + O / 2) the decodes it holds at once and R
        its spare room: the free tokens above the admission watermark less a whole output O for
        every running decode (what they may still grow into; in a ramp they are young).

        Per step about D / O requests finish when the cache is the limit, and each needs P prefill
        tokens to replace it: less prefill leaves decode slots empty, more only lengthens the step
        (every decode in it waits) for prompts the cache cannot hold anyway. Spare room is filled
        over one output length, the time the running pool takes to turn over, so what is admitted
        now never needs blocks that the running decodes will want. Where the cache is not the limit
        (short outputs) the same rule asks for more prefill, which is then the bottleneck.
        0 while fewer than `min_length_samples` requests have finished in the window."""
        # Requests finished in the window: prefills finished less the growth of the decode pool.
        finished = self._firsts - self._decode_growth
        if finished < self.min_length_samples or not state.num_total_blocks:
            return 0
        prompt = self._prefill_tokens / self._firsts
        # Decode tokens per finished request (the exposure estimate, unbiased for memoryless
        # lengths). Dividing by prefills finished instead counts requests still decoding: in a ramp
        # that understates O (about half the mean in the first 15 s of sharegpt_8k) and overstates
        # the prefill to admit, which fills the cache with young requests that all hold their
        # blocks for a whole output.
        output = max(1.0, self._decode_tokens / finished)
        pool = state.admissible_kv_tokens / (prompt + output / 2)
        room = max(0.0, state.admissible_free_tokens - state.num_decodes * output)
        return state.num_decodes + int((prompt * pool + room) / output)

    def _kv_room(self, state: EngineState) -> int | None:
        """Prompt tokens the free KV cache can take this step: free blocks above the engine's
        admission watermark, less kv_horizon_steps tokens for every running decode (the blocks
        they grow into); None without KV telemetry."""
        if not state.num_total_blocks:
            return None
        return max(0, state.admissible_free_tokens - state.num_decodes * self.kv_horizon_steps)

    def _queue_target_s(self) -> float:
        return min(self._ttft.target_s * self._ttft_feedback.factor, self.max_queue_delay_s)

    def _age_pressure(self, state: EngineState) -> float:
        return min(1.0, state.oldest_waiting_age_s / self._queue_target_s())

    def _pressure(self, state: EngineState, base_tokens: int, base_s: float) -> float:
        """(oldest wait + time to clear the pending prefill at the pace of the base (knee) step) /
        the queue-delay target, at most 1."""
        prefill = base_tokens - min(state.num_decodes, base_tokens)
        pending = state.running_prefill_tokens + state.waiting_prefill_tokens
        clear_s = pending / prefill * base_s if prefill > 0 else 0.0
        pressure = (state.oldest_waiting_age_s + clear_s) / self._queue_target_s()
        # Admitting faster into a nearly full KV cache only fills it: then no step has room for
        # prefill, decodes run alone and requests get preempted (recomputed), so throughput drops.
        if self.kv_reserve > 0 and state.num_total_blocks:
            pressure *= min(1.0, state.num_free_blocks / (self.kv_reserve * state.num_total_blocks))
        return min(1.0, pressure)

    def _chunk(self, state: EngineState, budget: int, pressure: float) -> int:
        room = max(1, budget - min(state.num_decodes, budget))
        running_prefills = state.num_running - state.num_decodes
        # Shorter prompts waiting behind longer running prefills (mean pending tokens compared):
        # serving them first lowers TTFT, so keep part of the room for them.
        if (running_prefills > 0 and state.num_waiting > 0
                and state.waiting_prefill_tokens * running_prefills < state.running_prefill_tokens * state.num_waiting):
            room -= min(state.waiting_prefill_tokens, int(room * self.max_waiting_share * pressure))
        return self.slo.bounds.clamp_chunk(room)

    def _record(self, budget: StepBudget, reason: str, pressure: float, planned_s: float, tail_s: float = 0.0,
                tbt_budget: int = 0, knee_budget: int = 0, kv_budget: int = 0, flow_budget: int = 0) -> StepBudget:
        self.last_decision = Decision(budget, reason, pressure, planned_s, tail_s, tbt_budget, knee_budget,
                                      kv_budget, flow_budget)
        return budget

    # -- observe ------------------------------------------------------------------------------

    def observe(self, stats: StepStats) -> None:
        self._since_observe = 0
        self.online_model.observe(stats)
        self._largest_step = max(self._largest_step, stats.num_tokens)
        last = self.last_decision
        if stats.max_token_gap_s > 0 and last is not None and last.planned_gap_s > 0:
            self._tbt_feedback.update(stats.max_token_gap_s, last.planned_gap_s)
        for ttft in stats.first_token_latencies_s:
            self._ttft_feedback.update(ttft, self._ttft.target_s)
        # Recent mean prompt and output lengths, from token flows: per request whose prefill
        # finished, how many prompt and decode tokens the engine processed (decayed sums).
        keep = 1.0 - 1.0 / self.length_window_steps
        self._prefill_tokens = keep * self._prefill_tokens + stats.num_prefill_tokens
        self._decode_tokens = keep * self._decode_tokens + stats.num_decode_tokens
        self._firsts = keep * self._firsts + len(stats.first_token_latencies_s)
        self._decode_growth = keep * self._decode_growth + stats.num_decode_tokens - self._last_decodes
        self._last_decodes = stats.num_decode_tokens

    @property
    def tbt_factor(self) -> float:
        return self._tbt_feedback.factor

    @property
    def ttft_factor(self) -> float:
        return self._ttft_feedback.factor
