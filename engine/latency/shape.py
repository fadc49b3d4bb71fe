"""The shape of one iteration, as latency models see it, and the latency-model protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from adaptive_sarathi.engine.batch import ScheduledBatch


@dataclass(frozen=True)
class StepShape:
    """What determines an iteration's cost, in tokens.

    sum_context_tokens sums, over the step's sequences, the context each one's last token attends
    (cached prefix + its chunk): the KV bytes a decode reads and the attention work of a chunk.
    """

    num_prefill_tokens: int
    num_decode_tokens: int
    num_prefill_seqs: int
    sum_context_tokens: int

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens

    @classmethod
    def from_batch(cls, batch: ScheduledBatch) -> "StepShape":
        """The shape of `batch` (prefill or decode as each chunk's is_prefill says); one pass."""
        prefill_tokens = decode_tokens = prefill_seqs = context = 0
        for c in batch.chunks:  # the simulator calls this every step: no property calls inside
            n = len(c.token_ids)
            context += c.start_position + n
            if c.is_prefill:
                prefill_tokens += n
                prefill_seqs += 1
            else:
                decode_tokens += n
        return cls(prefill_tokens, decode_tokens, prefill_seqs, context)


class LatencyModel(Protocol):
    """Predicts the wall time (seconds) of an iteration of a given shape."""

    def step_time(self, shape: StepShape) -> float:
        """Predicted seconds; never negative. Must not mutate `shape`."""
        ...
