"""Contracts between the scheduler and the executor for one engine step (the budget a step runs
under is in engine/budget.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from adaptive_sarathi.engine.json_mode import JSONMode
from adaptive_sarathi.engine.sampling_params import SamplingParams


class BlockTable(tuple):
    """A request's KV block ids in position order: an immutable tuple of ints that also keeps
    them as a numpy int32 array, built on first use.

    The scheduler hands the same BlockTable to every step until the request's table grows (a
    decode needs a new block only every block_size tokens), so input preparation converts each
    table to an array once instead of converting every block id of every request every step.
    """

    @cached_property
    def array(self) -> np.ndarray:
        """The block ids as a read-only int32 array [len(self)], shared by every reader."""
        array = np.array(self, dtype=np.int32)
        array.flags.writeable = False
        return array

    def __reduce__(self):
        # Pickled (to tensor-parallel workers) as its ids alone; the array is rebuilt on demand.
        return BlockTable, (tuple(self),)


def block_table_array(table: tuple[int, ...]) -> np.ndarray:
    """`table` as an int32 array: the cached one of a BlockTable (read-only, do not modify), a
    fresh one for a plain tuple."""
    return table.array if isinstance(table, BlockTable) else np.array(table, dtype=np.int32)


@dataclass(slots=True)
class SamplingHistory:
    """What sampling reads of a request beyond its logits row, for penalties and min_tokens: the
    request's own token lists (not copies; nothing may change them before the step's update) and
    the ids that end it (EOS, unless ignore_eos, and its stop token ids); json: the model's
    JSONMode when the request is in JSON mode, else None."""

    prompt_token_ids: list[int]
    output_token_ids: list[int]
    stop_ids: tuple[int, ...]
    json: JSONMode | None = None


@dataclass(slots=True)
class TokenLogprobs:
    """Log-probabilities at one sampled position: the chosen token's, and the `top` most likely
    tokens' as (token id, logprob) in descending order (empty when 0 were asked)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


# Not frozen, although nothing may change a chunk once it is scheduled: the scheduler builds one
# per request per step, and a frozen dataclass takes about five times longer to construct.
@dataclass(slots=True)
class ScheduledChunk:
    """The tokens one request computes in one step. Read-only once built.

    token_ids are the tokens at positions [start_position, start_position + len(token_ids)).
    block_table lists the KV blocks holding positions [0, context_len) (a BlockTable when the
    scheduler built the chunk; any tuple of ints is accepted). When `sample` is true the
    chunk reaches the request's last token, so the step produces one new token for it;
    num_output_tokens (outputs already produced) keys seeded sampling so that the same request
    samples the same token whatever the batch or a preemption. history is set only for sampling
    chunks whose params need it (SamplingParams.needs_history), else None.
    """

    request_id: str
    token_ids: tuple[int, ...]
    start_position: int
    block_table: tuple[int, ...]
    sample: bool
    sampling_params: SamplingParams
    num_output_tokens: int
    is_prefill: bool
    history: SamplingHistory | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def context_len(self) -> int:
        """Tokens attended by this chunk's last token (cached prefix + the chunk)."""
        return self.start_position + len(self.token_ids)


@dataclass
class ScheduledBatch:
    """What one step computes: decodes first, then prefill chunks, in that order.

    preempted_ids: requests whose KV blocks were freed this step to make room (they will recompute).
    relegated_ids: requests moved behind the others this step, their TTFT deadline missed.
    num_cache_query_tokens: tokens of the requests admitted this step, looked up in the prefix
    cache (0 with caching off); num_cached_tokens: those found there, which the chunks start
    after instead of computing them.
    """

    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)
    relegated_ids: list[str] = field(default_factory=list)
    num_cache_query_tokens: int = 0
    num_cached_tokens: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.chunks

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def num_decode_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks if not c.is_prefill)

    @property
    def num_prefill_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks if c.is_prefill)

    def tokens_by_request(self) -> dict[str, int]:
        """request_id -> num_scheduled_tokens; what scheduler tests assert step by step."""
        return {c.request_id: c.num_tokens for c in self.chunks}


@dataclass
class SampledTokens:
    """What a model runner samples in one step: request_id -> new token for every chunk with
    sample=True, and request_id -> TokenLogprobs for those of them that asked for logprobs."""

    token_ids: dict[str, int]
    logprobs: dict[str, TokenLogprobs] = field(default_factory=dict)


@dataclass
class StepResult:
    """What the executor returns for one ScheduledBatch.

    sampled_token_ids: request_id -> the new token, for every chunk with sample=True.
    duration_s: measured (or simulated) wall time of the step, seconds.
    logprobs: request_id -> the sampled token's TokenLogprobs, only for requests that asked
    (SamplingParams.logprobs) and only from executors that compute logits.
    """

    sampled_token_ids: dict[str, int]
    duration_s: float
    logprobs: dict[str, TokenLogprobs] = field(default_factory=dict)
