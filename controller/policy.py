"""The budget-policy interface and the fixed policy (Sarathi-Serve as published)."""

from __future__ import annotations

from abc import abstractmethod

from adaptive_sarathi.controller.estimator import Estimator
from adaptive_sarathi.engine.batch import StepBudget
from adaptive_sarathi.engine.stats import EngineState, StepStats


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


class FixedBudget(BudgetPolicy):
    """The same token budget and chunk size every step. Raises ValueError for a budget < 1 or a
    chunk < 1."""

    def __init__(self, token_budget: int = 512, max_chunk: int | None = None, seed: int = 0):
        self.token_budget = token_budget
        self.max_chunk = max_chunk
        self.seed = seed  # a constant policy draws no random numbers; kept for the common signature
        self.budget = StepBudget(token_budget, max_chunk)

    def decide(self, state: EngineState) -> StepBudget:
        return self.budget
