"""The adaptive budget policy: each step, an efficient budget whose predicted tail time keeps the TBT
SLO, larger when the waiting queue presses."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from adaptive_sarathi.controller.closed_loop import QuantileFeedback
from adaptive_sarathi.controller.ladder import budget_ladder, candidate_shape, ladder_candidates, last_true
from adaptive_sarathi.controller.latency_model import OnlineLatencyModel
from adaptive_sarathi.controller.policy import BudgetPolicy
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.batch import StepBudget
from adaptive_sarathi.engine.stats import EngineState, StepStats


@dataclass(frozen=True)
class Decision:
    """Why the last budget was chosen. reason: "model" (the ladder search), "no_decodes" (no TBT
    constraint: the max bound), "unsure" or "stalled" (the fallback budget). Times in seconds;
    budgets in tokens (0 when not searched)."""

    budget: StepBudget
    reason: str
    pressure: float  # TTFT pressure from the waiting queue, 0..1
    planned_gap_s: float  # the token gap budgeted for the tightest decode
    predicted_tail_s: float  # the model's tail time of the chosen step
    tbt_budget: int  # the largest budget whose tail fits the planned gap
    efficient_budget: int  # the smallest budget within efficiency_slack of tbt_budget's tokens per second


class AdaptiveBudget(BudgetPolicy):
    """Sarathi-Serve's budget, chosen every step instead of once per deployment.

    Each step, over the budget ladder (multiples of `tile_tokens`, default the SLO bounds' tile,
    within the bounds; never below the number of decodes, so every decode runs):

    - tbt_budget: the largest budget whose predicted tail step time (the latency model's TBT
      percentile) fits the gap planned for the tightest decode in flight,
      TBT target x tbt_factor - max_decode_gap_s;
    - efficient_budget: the smallest budget whose predicted tokens per second is within
      `efficiency_slack` of tbt_budget's. Beyond it a larger step buys almost no throughput but
      slows every decode in it, and slower decodes hold their KV blocks longer;
    - budget = efficient_budget + pressure_gain x pressure x (tbt_budget - efficient_budget),
      rounded down to the ladder.

    pressure (0..1) is TTFT pressure from the waiting queue: (oldest wait + time to clear every
    pending prefill token at tbt_budget's pace) / (TTFT target x ttft_factor), scaled down once
    free KV blocks fall below `kv_reserve` of the cache (admitting faster into a full cache only
    causes preemptions). A queue close to its TTFT target thus gets more of what the TBT target
    allows. When short prompts wait behind longer running prefills, up to
    max_waiting_share x pressure of the prefill room is kept for them by lowering the chunk size.
    With no decodes the TBT constraint does not bind and the max bound is used.

    tbt_factor and ttft_factor close the loop (QuantileFeedback): observed token gaps against the
    planned ones, observed TTFTs against the target, over the last `feedback_window` samples.

    Safe fallback to the SLO's fallback_token_budget: while the latency model is not confident
    (too few steps, or a large recent error) and when more than `stall_decisions` decisions pass
    without an observe(). The budget grows at most `explore_growth` x beyond the largest step seen,
    so the model is never trusted far outside what it has measured.

    `latency_model` is an unfitted template (default OnlineLatencyModel()); the policy learns on a
    clone of it, exposed as `online_model`. The policy draws no random numbers; `seed` is kept for
    the common constructor signature.
    """

    def __init__(self, slo: SLOPolicy, latency_model: OnlineLatencyModel | None = None,
                 tile_tokens: int | None = None, efficiency_slack: float = 0.1, pressure_gain: float = 0.5,
                 kv_reserve: float = 0.5, max_waiting_share: float = 0.5, explore_growth: float = 2.0,
                 stall_decisions: int = 8, feedback_window: int = 256, min_feedback_factor: float = 0.5,
                 seed: int = 0):
        if (not 0 <= efficiency_slack < 1 or pressure_gain < 0 or kv_reserve < 0
                or not 0 <= max_waiting_share <= 1 or explore_growth < 1 or stall_decisions < 1):
            raise ValueError("AdaptiveBudget needs 0 <= efficiency_slack < 1, pressure_gain >= 0, kv_reserve >= 0, "
                             "0 <= max_waiting_share <= 1, explore_growth >= 1 and stall_decisions >= 1")
        self.slo = slo
        self.latency_model = latency_model
        self.tile_tokens = tile_tokens
        self.efficiency_slack = efficiency_slack
        self.pressure_gain = pressure_gain
        self.kv_reserve = kv_reserve
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
        self._since_observe = 0
        self._hints: tuple[int | None, int | None] = (None, None)  # where the next two searches start
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
        limit = planned - state.max_decode_gap_s
        top_i = max(0, last_true(candidates, lambda b: step(b)[1] * ratio <= limit, self._hints[0]))
        top = candidates[top_i]
        pressure = self._pressure(state, *step(top))
        budget = efficient = top
        if top_i > 0:
            tokens, mean = step(top)
            want = (1.0 - self.efficiency_slack) * tokens / mean

            def slower(b: int) -> bool:
                n, t = step(b)
                return n < want * t  # tokens per second below `want`

            efficient = candidates[last_true(candidates[:top_i + 1], slower, self._hints[1]) + 1]
            target = efficient + self.pressure_gain * pressure * (top - efficient)
            budget = max(efficient, self._ladder[bisect.bisect_right(self._ladder, target) - 1])
        self._hints = (top, efficient)
        return self._record(StepBudget(budget, self._chunk(state, budget, pressure)), "model", pressure, planned,
                            step(budget)[1] * ratio, top, efficient)

    def _age_pressure(self, state: EngineState) -> float:
        return min(1.0, state.oldest_waiting_age_s / (self._ttft.target_s * self._ttft_feedback.factor))

    def _pressure(self, state: EngineState, top_tokens: int, top_s: float) -> float:
        """(oldest wait + time to clear the pending prefill at the pace of the largest step the TBT
        target allows) / effective TTFT target, at most 1."""
        prefill = top_tokens - min(state.num_decodes, top_tokens)
        pending = state.running_prefill_tokens + state.waiting_prefill_tokens
        clear_s = pending / prefill * top_s if prefill > 0 else 0.0
        pressure = (state.oldest_waiting_age_s + clear_s) / (self._ttft.target_s * self._ttft_feedback.factor)
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
                tbt_budget: int = 0, efficient_budget: int = 0) -> StepBudget:
        self.last_decision = Decision(budget, reason, pressure, planned_s, tail_s, tbt_budget, efficient_budget)
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

    @property
    def tbt_factor(self) -> float:
        return self._tbt_feedback.factor

    @property
    def ttft_factor(self) -> float:
        return self._ttft_feedback.factor
