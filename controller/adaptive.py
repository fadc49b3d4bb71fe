"""The adaptive budget policy: each step, the largest budget that keeps the TBT target of the
decodes in flight, within the free KV cache; requests past their TTFT deadline served last."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaptive_sarathi.controller.ladder import CandidateShapes, budget_ladder, candidate_shape, search_ladder
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
    """Why the last budget was chosen. reason: "tbt" (the TBT cap), "kv" (the free KV cache took
    less prompt than the cap allowed), "no_decodes" (no TBT constraint: the max bound), "unsure" or
    "stalled" (the SLO's fallback budget). Budgets in tokens, times in seconds."""

    budget: StepBudget
    reason: str
    tbt_budget: int = 0  # the largest budget whose predicted tail keeps the TBT target
    predicted_s: float = 0.0  # the model's mean time of the chosen step


class AdaptiveBudget(BudgetPolicy):
    """A budget planned against the declared SLOs, from the engine state and a latency model only.

    Control law, every step with D decodes in flight and t(B) the predicted time of the step a
    budget B builds (decodes first, then the prefill queue in order):
    - budget = the TBT cap: the largest B whose tail time t(B) x r fits the tightest running
      decode's slack (its class's TBT target less the time since its last token) less margin x
      the tightest TBT target, r being the model's observed actual/predicted ratio at the TBT
      percentile (timing noise lowers the cap smoothly instead of tripping a switch). Long steps
      while only relaxed decodes run, short ones when an interactive decode is in flight;
    - never more prompt than the free KV cache takes;
    - requests past their TTFT deadline (they cannot get a token within the shortest step) are
      relegated behind the others (StepBudget.relegate_before_s), so overload costs the fewest
      deadlines, and admits() refuses new requests the queue ahead would make late.
    Why the cap and not the smallest budget that still keeps the queue's deadlines: prompt work
    left for later is done later at a worse price per token (a small step costs nearly what the
    decodes alone cost), so a lazy budget turns the next burst into missed TTFTs, while the TBT
    target holds at the cap by construction.

    There is no feedback loop on observed latencies: the decisions move only with the engine
    state and with the latency model, which learns slowly. `latency_model` is an unfitted
    template (default OnlineLatencyModel()); the policy learns on a clone, `online_model`.
    Deployment facts (block size, free KV) come from the EngineState. No random numbers are
    drawn; `seed` is kept for the common signature.
    """

    def __init__(self, slo: SLOPolicy, latency_model: OnlineLatencyModel | None = None, margin: float = 0.05,
                 seed: int = 0):
        if not 0 <= margin < 1:
            raise ValueError(f"AdaptiveBudget: margin={margin!r}; it needs 0 <= margin < 1")
        self.slo = slo
        self.latency_model = latency_model
        self.margin = margin
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
        self._hint: int | None = None  # where the cap's search starts: the last cap (two or three predictions)
        self._drain_tps: float | None = None  # prompt tokens/s at the TBT cap, as last planned

    def decide(self, state: EngineState) -> StepBudget:
        self._since_observe += 1
        bounds = self.slo.bounds
        relegate = state.now_s  # requests already past their deadline
        fallback = self._fallback
        if self._since_observe > _STALL_DECISIONS:
            return self._record(fallback.token_budget, fallback.max_chunk, relegate, "stalled")
        if state.num_decodes == 0:
            return self._record(*self._fit_kv(state, bounds.max_token_budget), relegate, "no_decodes")
        if not self.online_model.is_confident:
            # Still predicted (0: nothing learned yet), so the metrics show the model converging.
            b = fallback.token_budget
            shape = candidate_shape(state, b, b - min(state.num_decodes, b))
            return self._record(b, fallback.max_chunk, relegate, "unsure",
                                predicted_s=self.online_model.step_time(shape))

        model = self.online_model
        shape_of = CandidateShapes(state)
        memo: dict[int, float] = {}
        # Budgets from `work` up build the same step: all the decodes and every queued prompt token.
        work = state.num_decodes + state.running_prefill_tokens + state.waiting_prefill_tokens

        def time_of(budget: int) -> float:
            budget = min(budget, work)
            t = memo.get(budget)
            if t is None:
                t = memo[budget] = model.step_time(shape_of(budget))
            return t

        floor = bounds.clamp_budget(state.num_decodes)
        if math.isfinite(state.decode_tbt_slack_s):  # the tightest decode's own target, less its wait
            limit = state.decode_tbt_slack_s - self.margin * self._tbt.target_s
        else:
            limit = (1.0 - self.margin) * self._tbt.target_s - state.max_decode_gap_s
        # The tail of a step of mean t is t x ratio: the cap is the largest budget whose mean fits limit / ratio.
        ratio = model.tail_ratio(self._tbt.quantile)
        top = search_ladder(self._ladder, floor, bounds.max_token_budget, time_of, limit / ratio if ratio > 0 else limit,
                            self._hint, flat_from=work)
        self._hint = top
        if top > state.num_decodes and time_of(top) > 0:
            self._drain_tps = (top - state.num_decodes) / time_of(top)
        # The shortest step is the soonest a waiting request can get its first token.
        budget, chunk = self._fit_kv(state, top)
        return self._record(budget, chunk, state.now_s + time_of(floor), "tbt" if budget == top else "kv", top,
                            time_of(budget))

    def _fit_kv(self, state: EngineState, budget: int) -> tuple[int, int]:
        """(`budget`, its chunk), both within the prompt tokens the free KV cache can take: free
        blocks above the admission watermark less room for the running decodes to grow. A chunk
        larger than that cannot be admitted, and a running prefill's would preempt decodes."""
        bounds = self.slo.bounds
        room = max(1, budget - min(state.num_decodes, budget))
        if state.num_total_blocks:
            kv_room = max(0, state.admissible_free_tokens - state.num_decodes * _KV_HORIZON_STEPS)
            budget = min(budget, max(bounds.clamp_budget(state.num_decodes), state.num_decodes + kv_room))
            room = min(room, max(1, kv_room))
        return budget, bounds.clamp_chunk(room)

    def _record(self, budget: int, chunk: int | None, relegate_before_s: float, reason: str, tbt_budget: int = 0,
                predicted_s: float = 0.0) -> StepBudget:
        step = StepBudget(budget, chunk, relegate_before_s, reason, predicted_s if predicted_s > 0 else None)
        self.last_decision = Decision(step, reason, tbt_budget, predicted_s)
        return step

    def observe(self, stats: StepStats) -> None:
        self._since_observe = 0
        self.online_model.observe(stats)

    relegates_late = True

    def slo_targets(self) -> SloTargets:
        return self._targets

    def prefill_rate_tps(self) -> float | None:
        """The prompt tokens per second at the last planned TBT cap (what admits() divides by)."""
        return self._drain_tps

    def latency_model_error(self):
        return self.online_model.error()

    def admits(self, state: EngineState, num_prompt_tokens: int, slo_class: str | None = None) -> bool:
        """False when the prompt tokens served before a new request of `slo_class` and its own
        would take longer than its TTFT target less the margin at the last planned TBT cap's
        prefill rate. Served before it, in the scheduler's deadline order: requests due no later
        than it (new deadline = now + its class's TTFT target) and recomputes of preempted
        requests (deadline inf, queued first); requests past their deadline (relegated behind it)
        and requests due later (a class with a looser target) are not. True until a step has been
        planned."""
        if self._drain_tps is None:
            return True
        own = self._targets.targets_for(slo_class).ttft_s
        if own is None:
            return True
        now, queue = state.now_s, state.prefill_queue
        mine = now + own
        ahead = sum(pending for deadline, pending, _ in queue if deadline == math.inf or now <= deadline <= mine)
        if len(queue) >= PREFILL_QUEUE_LEN and queue[-1][0] <= mine:
            # Requests past the listed ones are due later than the last listed: they may be due before this one.
            ahead += max(0, state.running_prefill_tokens + state.waiting_prefill_tokens
                         - sum(pending for _, pending, _ in queue))
        return (ahead + num_prompt_tokens) / self._drain_tps <= (1.0 - self.margin) * own
