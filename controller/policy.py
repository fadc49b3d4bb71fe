"""The budget-policy interface and the fixed policy (Sarathi-Serve as published)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from adaptive_sarathi.engine.batch import StepBudget
from adaptive_sarathi.engine.stats import EngineState, StepStats


class BudgetPolicy(ABC):
    """Decides each step's StepBudget and learns from each step's StepStats.

    Hyperparameters are constructor arguments; decide() answers safely before any observation and
    never mutates its input.
    """

    @abstractmethod
    def decide(self, state: EngineState) -> StepBudget:
        """The budget for the next step."""

    def observe(self, stats: StepStats) -> None:
        """Learn from a finished step. The default ignores it."""


class FixedBudget(BudgetPolicy):
    """The same token budget and chunk size every step."""

    def __init__(self, token_budget: int = 512, max_chunk: int | None = None):
        self.budget = StepBudget(token_budget, max_chunk)

    def decide(self, state: EngineState) -> StepBudget:
        return self.budget

    def __repr__(self) -> str:
        return f"FixedBudget(token_budget={self.budget.token_budget}, max_chunk={self.budget.max_chunk})"
