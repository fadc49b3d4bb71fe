"""The scheduler interface: a CPU-only state machine driven one step at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.budget import StepBudget
from adaptive_sarathi.engine.request import FinishReason, Request


# Not frozen (read-only by convention): one is built per request per step, and a frozen dataclass
# takes about five times longer to construct.
@dataclass(slots=True)
class RequestUpdate:
    """What one step changed for one request: tokens appended and whether it ended. Read-only."""

    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None


class Scheduler(ABC):
    """Decides, each step, which requests compute how many tokens.

    Owns the waiting queue, the running list and (through the BlockManager) every KV block.
    Imports no CUDA and no model.
    """

    @abstractmethod
    def add_request(self, request: Request) -> None:
        """Queue a request (status WAITING). It becomes schedulable once now >= its arrival_time."""

    @abstractmethod
    def schedule(self, budget: StepBudget, now: float) -> ScheduledBatch:
        """Pick this step's chunks under `budget` at engine time `now` (seconds).

        Mutates queue state (admissions, preemptions, block allocation, first_scheduled_time).
        Returns an empty batch when nothing can run.
        """

    @abstractmethod
    def update(self, result: StepResult, now: float) -> list[RequestUpdate]:
        """Apply the executor's result for the last scheduled batch at engine time `now`.

        Advances num_computed_tokens, appends sampled tokens, records token times, finishes
        requests that hit EOS / a stop token / max_tokens / the context window, frees their blocks.
        Returns one RequestUpdate per request that received a token or finished.
        """

    @abstractmethod
    def finish_request(self, request_id: str, reason: FinishReason, now: float) -> bool:
        """End a request early (abort, or a stop string found by the engine), freeing its blocks.
        Returns False when the id is unknown or already finished."""
