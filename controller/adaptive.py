"""The adaptive budget policy: each step, the smallest budget that keeps the TTFT deadlines of the
queue, within the largest one that keeps the TBT target of the decodes in flight."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from adaptive_sarathi.controller.ladder import budget_ladder, candidate_shape, ladder_candidates, last_true
from adaptive_sarathi.controller.latency_model import OnlineLatencyModel
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import PREFILL_QUEUE_LEN, EngineState, StepStats

_STALL_DECISIONS = 8  # decisions without observe() before the policy falls back (a stalled engine)
_KV_HORIZON_STEPS = 2  # tokens each running decode is kept room for when sizing prefill into the cache


def steady_latency_model(prior, tile_tokens: int) -> OnlineLatencyModel:
    """The latency model the policy plans with: with a prior, the residual regression is damped
    (ridge 100: it corrects the prior only where many steps agree, instead of extrapolating noise
    to step sizes rarely seen) and the level's half-life is 64 steps (a second or two: a real
    slowdown is tracked, a burst of noisy steps is not). Every decision follows this model, so
    its noise would be the policy's noise."""
    if prior is None:
        return OnlineLatencyModel(tile_tokens=tile_tokens, level_halflife=64)
    return OnlineLatencyModel(prior=prior, tile_tokens=tile_tokens, ridge=100.0, level_halflife=64)


@dataclass(frozen=True)
class Decision:
    """Why the last budget was chosen. reason: "deadline" (the queue's deadlines need more than
    the knee), "knee", "tbt" (the TBT cap binds: deadlines of some requests cannot all be met),
    "no_decodes" (no TBT constraint: the max bound), "unsure" or "stalled" (the SLO's fallback
    budget). Budgets in tokens, times in seconds."""

    budget: StepBudget
    reason: str
    tbt_budget: int = 0  # the largest budget whose predicted tail keeps the TBT target
    knee_budget: int = 0  # the largest budget costing at most knee_slack more than the decodes alone
    need_budget: int = 0  # the smallest budget keeping every deadline that the TBT cap allows
    predicted_s: float = 0.0  # the model's mean time of the chosen step


class AdaptiveBudget(BudgetPolicy):
    """A budget planned against the declared SLOs, from the engine state and a latency model only.

    Control law, every step with D decodes in flight and t(B) the predicted time of the step a
    budget B builds:
    - TBT cap: top = the largest B whose tail time t(B) x r fits the tightest running decode's
      slack (its class's TBT target less the time since its last token) less margin x the
      tightest TBT target: long steps while only relaxed decodes run (r: the model's observed
      actual/predicted ratio at the TBT percentile, so timing noise lowers the cap smoothly
      instead of tripping a switch);
    - knee: the largest B <= top with t(B) <= (1 + knee_slack) t(D): prefill that rides along
      with the memory-bound decodes almost free;
    - need: the smallest B in [knee, top] at which every request of the prefill queue meets its
      TTFT deadline: ceil(P_k / (B - D)) steps of t(B) finish the P_k tokens queued up to and
      including request k before its deadline (arrival + its class's TTFT target, stamped by the
      engine) less margin x the tightest TTFT target. When even top cannot keep them all
      (overload), top: the queue drains fastest;
    - budget = max(knee, need), never more prompt than the free KV cache takes.
    Requests past their deadline (they cannot get a token within the shortest step) are relegated
    behind the others (StepBudget.relegate_before_s), so overload costs the fewest deadlines.

    There is no feedback loop on observed latencies: the decisions move only with the queue and
    with the latency model, which learns slowly. `latency_model` is an unfitted template (default
    OnlineLatencyModel()); the policy learns on a clone, `online_model`. Deployment facts (block
    size, free KV) come from the EngineState. No random numbers are drawn; `seed` is kept for the
    common signature.
    """

    def __init__(self, slo: SLOPolicy, latency_model: OnlineLatencyModel | None = None, margin: float = 0.05,
                 knee_slack: float = 0.15, seed: int = 0):
        if not 0 <= margin < 1 or not knee_slack >= 0:
            raise ValueError(f"AdaptiveBudget: margin={margin!r}, knee_slack={knee_slack!r}; it needs "
                             "0 <= margin < 1 and knee_slack >= 0")
        self.slo = slo
        self.latency_model = latency_model
        self.margin = margin
        self.knee_slack = knee_slack
        self.seed = seed
        self.online_model = latency_model.clone() if latency_model is not None else OnlineLatencyModel()
        self._since_observe = 0
        self.last_decision: Decision | None = None
        self.set_slo(slo)

    def set_slo(self, slo: SLOPolicy) -> None:
        """Serve `slo` from the next decision on: every value derived from the policy (ladder,
        tightest targets, per-class targets, fallback budget) is rebuilt and the planning hints
        are dropped, so the next decide() plans against the new targets from scratch. What was
        learned (online_model) is kept: it describes the hardware, not the policy. Requests
        already queued keep the deadlines they were stamped with."""
        self.slo = slo
        bounds = slo.bounds
        self._ladder = budget_ladder(bounds, bounds.tile_tokens)
        self._tbt = slo.tightest_tbt
        self._ttft = slo.tightest_ttft
        self._targets = slo.as_targets()
        self._fallback = StepBudget(bounds.fallback_token_budget, bounds.clamp_chunk(bounds.fallback_token_budget))
        # Where the three ladder searches start (the last decision's budgets): a steady state
        # then costs two or three model predictions per search instead of a bisection.
        self._hints: tuple[int | None, int | None, int | None] = (None, None, None)
        self._drain_tps: float | None = None  # prompt tokens/s at the TBT cap, as last planned

    def decide(self, state: EngineState) -> StepBudget:
        self._since_observe += 1
        bounds = self.slo.bounds
        relegate = state.now_s  # requests already past their deadline
        if self._since_observe > _STALL_DECISIONS:
            return self._record(self._with(self._fallback, relegate), "stalled")
        if state.num_decodes == 0:
            top = bounds.max_token_budget
            return self._record(self._fit_kv(state, top, relegate), "no_decodes")
        if not self.online_model.is_confident:
            # Still predicted (0: nothing learned yet), so the metrics show the model converging.
            fallback = self._fallback.token_budget
            shape = candidate_shape(state, fallback, fallback - min(state.num_decodes, fallback))
            return self._record(self._with(self._fallback, relegate), "unsure",
                                predicted_s=self.online_model.step_time(shape))

        model = self.online_model
        memo: dict[int, float] = {}

        def time_of(budget: int) -> float:
            if budget not in memo:
                memo[budget] = model.step_time(candidate_shape(state, budget, budget - min(state.num_decodes, budget)))
            return memo[budget]

        floor = bounds.clamp_budget(state.num_decodes)
        candidates = ladder_candidates(self._ladder, floor, bounds.max_token_budget)
        if math.isfinite(state.decode_tbt_slack_s):  # the tightest decode's own target, less its wait
            limit = state.decode_tbt_slack_s - self.margin * self._tbt.target_s
        else:
            limit = (1.0 - self.margin) * self._tbt.target_s - state.max_decode_gap_s
        ratio = model.tail_ratio(self._tbt.quantile)
        top_hint, knee_hint, need_hint = self._hints
        top_i = max(0, last_true(candidates, lambda b: time_of(b) * ratio <= limit, top_hint))
        knee_s = (1.0 + self.knee_slack) * time_of(floor)
        knee_i = max(0, last_true(candidates[:top_i + 1], lambda b: time_of(b) <= knee_s, knee_hint))
        need_i, reason = self._need(state, candidates, knee_i, top_i, time_of, need_hint)
        top = candidates[top_i]
        self._hints = (top, candidates[knee_i], candidates[need_i])
        if top > state.num_decodes and time_of(top) > 0:
            self._drain_tps = (top - state.num_decodes) / time_of(top)
        budget = candidates[need_i]
        # The shortest step is the soonest a waiting request can get its first token.
        chosen = self._fit_kv(state, budget, state.now_s + time_of(floor))
        return self._record(chosen, reason, candidates[top_i], candidates[knee_i], budget, time_of(budget))

    def _need(self, state: EngineState, candidates: tuple[int, ...], knee_i: int, top_i: int,
              time_of, hint: int | None) -> tuple[int, str]:
        """(index of the budget to run, reason): the smallest candidate in [knee, top] meeting every
        deadline of the prefill queue; top when none does; the knee when the queue asks no more."""
        queue = state.prefill_queue
        if not queue or knee_i == top_i:
            return knee_i, "knee"
        # (prompt tokens queued up to and including the request, its slack) of every request with
        # a deadline; plain Python: the queue is short, and numpy's per-call cost would dominate.
        lead = state.now_s + self.margin * self._ttft.target_s
        due: list[tuple[int, float]] = []
        queued = 0
        for deadline, pending, _ in queue:
            queued += pending
            if deadline != math.inf:
                due.append((queued, deadline - lead))
        if not due:
            return knee_i, "knee"
        decodes = state.num_decodes

        def keeps_all(budget: int) -> bool:
            prefill = max(1, budget - min(decodes, budget))
            step_s = time_of(budget)
            return all(-(-tokens // prefill) * step_s <= slack for tokens, slack in due)

        if not keeps_all(candidates[top_i]):
            return top_i, "tbt"  # overload: some deadlines are lost whatever the budget; drain fastest

        if keeps_all(candidates[knee_i]):
            return knee_i, "knee"
        # The first budget that keeps them all: one past the last that does not.
        late_i = last_true(candidates[knee_i + 1:top_i + 1], lambda b: not keeps_all(b), hint)
        return knee_i + 2 + late_i, "deadline"

    def _fit_kv(self, state: EngineState, budget: int, relegate_before_s: float) -> StepBudget:
        """`budget` with its chunk, both within the prompt tokens the free KV cache can take: free
        blocks above the admission watermark less room for the running decodes to grow. A chunk
        larger than that cannot be admitted, and a running prefill's would preempt decodes."""
        bounds = self.slo.bounds
        room = max(1, budget - min(state.num_decodes, budget))
        if state.num_total_blocks:
            kv_room = max(0, state.admissible_free_tokens - state.num_decodes * _KV_HORIZON_STEPS)
            budget = min(budget, max(bounds.clamp_budget(state.num_decodes), state.num_decodes + kv_room))
            room = min(room, max(1, kv_room))
        return StepBudget(budget, bounds.clamp_chunk(room), relegate_before_s)

    @staticmethod
    def _with(budget: StepBudget, relegate_before_s: float) -> StepBudget:
        return StepBudget(budget.token_budget, budget.max_chunk, relegate_before_s)

    def _record(self, budget: StepBudget, reason: str, tbt_budget: int = 0, knee_budget: int = 0,
                need_budget: int = 0, predicted_s: float = 0.0) -> StepBudget:
        budget = replace(budget, reason=reason, predicted_duration_s=predicted_s if predicted_s > 0 else None)
        self.last_decision = Decision(budget, reason, tbt_budget, knee_budget, need_budget, predicted_s)
        return budget

    def observe(self, stats: StepStats) -> None:
        self._since_observe = 0
        self.online_model.observe(stats)

    def slo_targets(self) -> SloTargets:
        return self._targets

    def latency_model_error(self):
        return self.online_model.error()

    def admits(self, state: EngineState, num_prompt_tokens: int, slo_class: str | None = None) -> bool:
        """False when the prompt tokens queued ahead of a new request of `slo_class` (requests
        past their deadline, served after it, left out), and its own, would take longer than its
        TTFT target less the margin at the last planned TBT cap's prefill rate. True until a step
        has been planned."""
        if self._drain_tps is None:
            return True
        own = self._targets.targets_for(slo_class).ttft_s
        if own is None:
            return True
        queue = state.prefill_queue
        ahead = sum(pending for deadline, pending, _ in queue if deadline >= state.now_s)
        if len(queue) >= PREFILL_QUEUE_LEN:  # requests past the listed ones wait too
            ahead += max(0, state.running_prefill_tokens + state.waiting_prefill_tokens
                         - sum(pending for _, pending, _ in queue))
        return (ahead + num_prompt_tokens) / self._drain_tps <= (1.0 - self.margin) * own
