"""The budget contract: what a step may process (StepBudget), who decides it (BudgetPolicy) and the
constant policy that is the default (FixedBudget, Sarathi-Serve as published).

It lives beside the engine so that the engine depends on the contract only; the adaptive and
baseline policies in controller/ implement it. A policy reads deployment facts (block size,
admissible free KV) from the EngineState it is handed, never from its own constructor.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from adaptive_sarathi.engine.estimator import Estimator
from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import EngineState, StepStats

# StepBudget.reason of a budget that is the SLO policy's fallback rather than a plan (the model is
# not trusted yet, or the engine stopped reporting steps): policies name fallbacks by these, and
# the metrics count them apart.
FALLBACK_REASONS = frozenset({"unsure", "stalled"})


@dataclass(frozen=True)
class StepBudget:
    """Limits for one iteration, decided by the controller before each step.

    token_budget: most tokens (decodes count 1 each, plus prefill chunks) the step may process.
    max_chunk: most prompt tokens one request may take in this step; None = token_budget.
    relegate_before_s: requests never scheduled that arrived before this engine time have missed
    their TTFT deadline: the scheduler serves them after every other arrived request (None: FCFS).
    reason: why the policy chose these limits, free text for logs (StepStats.budget_reason).
    predicted_duration_s: the policy's predicted seconds of the step these limits build (what
    the metrics compare with the step's measured period); None when the policy has no model.
    """

    token_budget: int
    max_chunk: int | None = None
    relegate_before_s: float | None = None
    reason: str = ""
    predicted_duration_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.token_budget, int) or self.token_budget < 1:
            raise ValueError(f"StepBudget.token_budget={self.token_budget!r}: use an integer >= 1")
        if self.max_chunk is not None and (not isinstance(self.max_chunk, int) or self.max_chunk < 1):
            raise ValueError(f"StepBudget.max_chunk={self.max_chunk!r}: use an integer >= 1 or None")
        if not isinstance(self.reason, str):
            raise ValueError(f"StepBudget.reason={self.reason!r}: use a string")

    @property
    def chunk_limit(self) -> int:
        return self.token_budget if self.max_chunk is None else min(self.max_chunk, self.token_budget)


class BudgetPolicy(Estimator):
    """Decides each step's StepBudget and learns from each step's StepStats.

    Hyperparameters are constructor arguments kept as same-named attributes (get_params/clone
    rebuild an unfitted copy); a `seed` argument; decide() answers safely before any observation
    and never mutates its input. decide() and observe() may update the policy's own state.
    """

    @abstractmethod
    def decide(self, state: EngineState) -> StepBudget:
        """The budget for the next step."""

    def observe(self, stats: StepStats) -> None:
        """Learn from a finished step. The default ignores it."""

    def latency_model_error(self):
        """The online error of the latency model the policy plans with: an object with the fields
        num_predictions, mae_s, mape, recent_mape (fractions) and num_drifts (as
        controller.latency_model.LatencyModelError), or None (the default) when the policy learns
        no model. Read by the metrics at scrape time, from another thread: it must only read."""
        return None

    def slo_targets(self) -> SloTargets | None:
        """The targets the policy plans for, per request class; the engine stamps every request
        with its TTFT deadline and TBT target from them, and the scheduler orders waiting requests
        by deadline. None (the default): no deadlines, first come first served."""
        return None

    # Whether requests past their TTFT deadline are served after every other (StepBudget
    # relegate_before_s): a forecast of a new request's wait then leaves them out.
    relegates_late = False

    def prefill_rate_tps(self) -> float | None:
        """Prompt tokens per second the policy last planned to drain (what a forecast of a new
        request's first-token time divides the queue by), or None (the default) when it plans no
        rate. Read from other threads: it must only read."""
        return None

    def admits(self, state: EngineState, num_prompt_tokens: int, slo_class: str | None = None) -> bool:
        """Whether a request of `num_prompt_tokens` and `slo_class` arriving now can still get
        its first token within its TTFT target; a server refuses (429) the ones that cannot,
        rather than let them wait in a queue that misses every deadline. The default admits every
        request."""
        return True


class FixedBudget(BudgetPolicy):
    """The same token budget and chunk size every step. With `deadlines` (SLO targets per class),
    requests are stamped with deadlines and admitted earliest deadline first (see slo_targets);
    without, first come first served, as Sarathi-Serve published it. Raises ValueError for a
    budget < 1 or a chunk < 1."""

    def __init__(self, token_budget: int = 512, max_chunk: int | None = None, seed: int = 0,
                 deadlines: SloTargets | None = None):
        self.token_budget = token_budget
        self.max_chunk = max_chunk
        self.seed = seed  # a constant policy draws no random numbers; kept for the common signature
        self.deadlines = deadlines
        self.budget = StepBudget(token_budget, max_chunk)

    def decide(self, state: EngineState) -> StepBudget:
        return self.budget

    def slo_targets(self) -> SloTargets | None:
        return self.deadlines

    def set_slo(self, slo) -> None:
        """Stamp requests from now on with the deadlines of `slo` (an SLO policy: anything with
        as_targets() -> SloTargets), admitted earliest deadline first; the budget stays fixed."""
        self.deadlines = slo.as_targets()
