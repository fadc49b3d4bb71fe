"""ScheduledBatches of a given shape over fake block tables, for profiling and benchmarks."""

from __future__ import annotations

import random
from typing import Sequence

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk
from adaptive_sarathi.engine.profiling.profile_shapes import ProfileShape
from adaptive_sarathi.engine.sampling_params import SamplingParams

_GREEDY = SamplingParams()


def synthetic_batch(shape: ProfileShape, block_ids: Sequence[int], block_size: int, vocab_size: int,
                    rng: random.Random) -> ScheduledBatch:
    """A batch of `shape`: decodes then prefill chunks, every one sampling greedily (a prefill chunk
    thus counts as a prompt's last chunk, which pays for one LM-head row).

    Sequences take consecutive runs of `block_ids`, which must hold at least
    shape.num_blocks(block_size) ids (ValueError otherwise); pass scattered ids to resemble a cache
    that has been in use. Token ids are drawn from `rng` uniformly in [0, vocab_size).
    """
    needed = shape.num_blocks(block_size)
    if len(block_ids) < needed:
        raise ValueError(f"shape {shape} needs {needed} KV blocks of {block_size} tokens, got {len(block_ids)}")
    next_block = 0

    def take(context_len: int) -> tuple[int, ...]:
        nonlocal next_block
        count = -(-context_len // block_size)
        table = tuple(block_ids[next_block:next_block + count])
        next_block += count
        return table

    def tokens(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(vocab_size) for _ in range(n))

    chunks = [ScheduledChunk(f"decode-{i}", tokens(1), shape.decode_context_len - 1, take(shape.decode_context_len),
                             sample=True, sampling_params=_GREEDY, num_output_tokens=1, is_prefill=False)
              for i in range(shape.num_decodes)]
    chunks += [ScheduledChunk(f"prefill-{i}", tokens(n), prefix, take(prefix + n), sample=True,
                              sampling_params=_GREEDY, num_output_tokens=0, is_prefill=True)
               for i, (n, prefix) in enumerate(shape.prefill_chunks)]
    return ScheduledBatch(chunks)
