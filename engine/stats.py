"""StepStats: the plain record every engine step emits to the controller and the metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepStats:
    """Shape, cost and queue state of one iteration. Units are in the field names or noted."""

    step_index: int
    start_time_s: float
    duration_s: float
    num_decode_tokens: int
    num_prefill_tokens: int
    num_seqs: int
    num_prefill_seqs: int
    sum_context_tokens: int  # context lengths attended, summed over the step's sequences
    max_context_tokens: int
    num_waiting: int
    num_running: int
    num_free_blocks: int
    num_total_blocks: int
    num_preempted: int
    token_budget: int
    max_chunk: int

    @property
    def num_tokens(self) -> int:
        return self.num_decode_tokens + self.num_prefill_tokens


@dataclass(frozen=True)
class EngineState:
    """What the controller sees before deciding a step's budget."""

    now_s: float
    num_waiting: int  # arrived and not yet admitted (or preempted)
    num_running: int
    num_decodes: int  # running requests whose next step is a decode
    num_free_blocks: int
    num_total_blocks: int
