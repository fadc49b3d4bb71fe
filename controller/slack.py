"""The slack policy (Niyama style): a budget ladder searched against the tightest decode's slack."""

from __future__ import annotations

import numpy as np

from adaptive_sarathi.controller.ladder import budget_ladder, candidate_shape, search_ladder
from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.latency.shape import LatencyModel, StepShape
from adaptive_sarathi.engine.stats import EngineState, StepStats


def _row(shape: StepShape) -> tuple[float, ...]:
    return (1.0, shape.num_prefill_tokens, shape.num_decode_tokens, shape.num_prefill_seqs, shape.sum_context_tokens)


class SlackBudget(BudgetPolicy):
    """Each step, the largest budget on the ladder (multiples of `tile_tokens`, default the SLO's
    tile, within its bounds) whose predicted mean step time fits the tightest decode's slack,
    TBT target - max_decode_gap_s. No tail margin and no closed loop: the model is fitted offline, as Niyama's.

    The model is `prior` when given; otherwise a least-squares fit of duration on (1, prefill
    tokens, decode tokens, prefill seqs, attended context) over the first `fit_steps` steps, then
    frozen. Until it exists, the SLO's fallback budget. With no decodes, the max bound.
    Deterministic; `seed` is kept for the common constructor signature.
    """

    def __init__(self, slo: SLOPolicy, prior: LatencyModel | None = None, tile_tokens: int | None = None,
                 fit_steps: int = 256, seed: int = 0):
        if fit_steps < 5:
            raise ValueError(f"fit_steps={fit_steps!r} is too few for a 5-coefficient fit: use >= 5")
        self.prior = prior
        self.tile_tokens = tile_tokens
        self.fit_steps = fit_steps
        self.seed = seed

        self._rows: list[tuple[float, ...]] = []
        self._durations: list[float] = []
        self.coefficients: tuple[float, ...] | None = None  # the fitted model (seconds per unit)
        self.set_slo(slo)

    def set_slo(self, slo: SLOPolicy) -> None:
        """Serve `slo` from the next decision on: the ladder, the TBT target and the fallback
        budget are rebuilt from it; the fit (or the steps gathered towards it) is kept."""
        self.slo = slo
        bounds = slo.bounds
        self._ladder = budget_ladder(bounds, self.tile_tokens or bounds.tile_tokens)
        self._tbt_s = slo.tightest_tbt.target_s
        self._fallback = StepBudget(bounds.fallback_token_budget, bounds.clamp_chunk(bounds.fallback_token_budget))
        self._previous_budget: int | None = None  # where the next ladder search starts

    def step_time(self, shape: StepShape) -> float:
        """The policy's model: the prior, else the frozen fit (0.0 before it)."""
        if self.prior is not None:
            return self.prior.step_time(shape)
        if self.coefficients is None:
            return 0.0
        return max(0.0, sum(c * v for c, v in zip(self.coefficients, _row(shape))))

    def decide(self, state: EngineState) -> StepBudget:
        bounds = self.slo.bounds
        if state.num_decodes == 0:
            return StepBudget(bounds.max_token_budget, bounds.max_chunk)
        if self.prior is None and self.coefficients is None:
            return self._fallback
        floor = bounds.clamp_budget(state.num_decodes)
        slack = self._tbt_s - state.max_decode_gap_s
        budget = search_ladder(self._ladder, floor, bounds.max_token_budget,
                                  lambda b: self.step_time(candidate_shape(state, b, b)), slack,
                                  hint=self._previous_budget)
        self._previous_budget = budget
        return StepBudget(budget, bounds.clamp_chunk(budget))

    def observe(self, stats: StepStats) -> None:
        if self.prior is not None or self.coefficients is not None or stats.duration_s <= 0:
            return
        self._rows.append(_row(stats.shape))
        self._durations.append(stats.duration_s)
        if len(self._rows) >= self.fit_steps:
            solution = np.linalg.lstsq(np.array(self._rows), np.array(self._durations), rcond=None)[0]
            self.coefficients = tuple(float(c) for c in solution)
            self._rows, self._durations = [], []
