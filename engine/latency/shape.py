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
    decode_context_tokens is the decodes' part of that sum; the rest (prefill_context_tokens) is
    the chunks' cached prefixes plus the chunks. Not given (or negative), it is derived as if no
    chunk had a cached prefix: sum_context_tokens - num_prefill_tokens when the step has decodes,
    else 0. `from_batch` always gives the exact value.

    num_cached_tokens: prompt tokens that requests admitted this step found in the prefix cache;
    they cost no compute (the chunks start after them), only attention reads, which
    sum_context_tokens already counts.
    """

    num_prefill_tokens: int
    num_decode_tokens: int
    num_prefill_seqs: int
    sum_context_tokens: int
    decode_context_tokens: int = -1
    num_cached_tokens: int = 0

    def __post_init__(self) -> None:
        if self.decode_context_tokens < 0:
            derived = self.sum_context_tokens - self.num_prefill_tokens if self.num_decode_tokens else 0
            object.__setattr__(self, "decode_context_tokens", derived)

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens

    @property
    def prefill_context_tokens(self) -> int:
        """Context the prefill chunks attend, summed (their cached prefixes + the chunks)."""
        return self.sum_context_tokens - self.decode_context_tokens

    @classmethod
    def from_batch(cls, batch: ScheduledBatch) -> "StepShape":
        """The shape of `batch` (prefill or decode as each chunk's is_prefill says); one pass."""
        prefill_tokens = decode_tokens = prefill_seqs = context = decode_context = 0
        for c in batch.chunks:  # the simulator calls this every step: no property calls inside
            n = len(c.token_ids)
            context += c.start_position + n
            if c.is_prefill:
                prefill_tokens += n
                prefill_seqs += 1
            else:
                decode_tokens += n
                decode_context += c.start_position + n
        return cls(prefill_tokens, decode_tokens, prefill_seqs, context, decode_context, batch.num_cached_tokens)


class LatencyModel(Protocol):
    """Predicts the wall time (seconds) of an iteration of a given shape."""

    def step_time(self, shape: StepShape) -> float:
        """Predicted seconds; never negative. Must not mutate `shape`."""
        ...
