"""The two-level policy (P-PAS style): a low budget normally, a high one under prefill pressure."""

from __future__ import annotations

from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.stats import EngineState


class TwoLevelBudget(BudgetPolicy):
    """Switches to `high` when the waiting queue holds >= enter_tokens prefill tokens or its oldest
    request waited >= enter_age_frac x the TTFT target; back to `low` once both fall to
    exit_tokens and exit_age_frac (hysteresis, so the budget does not flap every step).

    low None = the SLO's fallback budget; high None = 4 x low (within the bounds); enter_tokens
    None = high; exit_tokens None = low. Raises ValueError when low >= high or either is outside
    the SLO's bounds. Deterministic; `seed` is kept for the common constructor signature.
    """

    def __init__(self, slo: SLOPolicy, low: int | None = None, high: int | None = None,
                 enter_tokens: int | None = None, exit_tokens: int | None = None,
                 enter_age_frac: float = 0.5, exit_age_frac: float = 0.25, seed: int = 0):
        self.low = low
        self.high = high
        self.enter_tokens = enter_tokens
        self.exit_tokens = exit_tokens
        self.enter_age_frac = enter_age_frac
        self.exit_age_frac = exit_age_frac
        self.seed = seed

        self.is_high = False
        self.set_slo(slo)

    def set_slo(self, slo: SLOPolicy) -> None:
        """Serve `slo` from the next decision on: the levels (explicit ones checked against its
        bounds, defaults derived from them) and the TTFT target are rebuilt; the current level is
        kept. Raises ValueError, changing nothing, when an explicit level falls outside the new
        bounds."""
        low, high, enter_tokens, exit_tokens = self.low, self.high, self.enter_tokens, self.exit_tokens
        exit_age_frac, enter_age_frac = self.exit_age_frac, self.enter_age_frac
        bounds = slo.bounds
        lo = bounds.fallback_token_budget if low is None else low
        hi = bounds.clamp_budget(4 * lo) if high is None else high
        for name, value in (("low", lo), ("high", hi)):
            if not bounds.min_token_budget <= value <= bounds.max_token_budget:
                raise ValueError(f"two_level {name}={value} is outside the SLO policy {slo.name!r} bounds "
                                 f"[{bounds.min_token_budget}, {bounds.max_token_budget}]: pick a budget inside them")
        if lo >= hi:
            raise ValueError(f"two_level low={lo} must be below high={hi}: e.g. two_level:512:2048")
        if exit_age_frac > enter_age_frac:
            raise ValueError(f"exit_age_frac={exit_age_frac} exceeds enter_age_frac={enter_age_frac}: "
                             "the exit threshold must not be above the entry one")
        self.slo = slo
        self._low = StepBudget(lo, bounds.clamp_chunk(lo))
        self._high = StepBudget(hi, bounds.clamp_chunk(hi))
        self._enter_tokens = hi if enter_tokens is None else enter_tokens
        self._exit_tokens = lo if exit_tokens is None else exit_tokens
        self._ttft_s = slo.tightest_ttft.target_s

    def decide(self, state: EngineState) -> StepBudget:
        age = state.oldest_waiting_age_s / self._ttft_s
        if self.is_high:
            self.is_high = state.waiting_prefill_tokens > self._exit_tokens or age > self.exit_age_frac
        else:
            self.is_high = state.waiting_prefill_tokens >= self._enter_tokens or age >= self.enter_age_frac
        return self._high if self.is_high else self._low
