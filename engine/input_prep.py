"""Step inputs from a ScheduledBatch: a pure function of the batch, testable on the CPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk
from adaptive_sarathi.kernels.attention import AttentionMetadata, PrefillSpan


@dataclass
class ModelInputs:
    """Flattened tokens of one step, decodes first then prefill chunks.

    output_rows[i] is the row whose hidden state samples for sample_chunks[i]. All tensors are
    fresh CPU tensors the caller owns.
    """

    input_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    attention: AttentionMetadata
    output_rows: torch.Tensor  # int64 [N]
    sample_chunks: list[ScheduledChunk]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


def order_for_attention(batch: ScheduledBatch) -> list[ScheduledChunk]:
    """Single-token chunks first (they attend as decodes), then longer chunks, each group in
    schedule order."""
    singles = [c for c in batch.chunks if c.num_tokens == 1]
    multis = [c for c in batch.chunks if c.num_tokens > 1]
    return singles + multis


def prepare_inputs(batch: ScheduledBatch, block_size: int) -> ModelInputs:
    """Positions, slot mapping, block tables and sampling rows for `batch`.

    Raises ValueError when a chunk's block table does not cover its context (a scheduler bug)."""
    # This runs on the host every step while the GPU waits, so lists are built in plain Python and
    # turned into tensors once each, through numpy (several times faster than torch.tensor).
    chunks = order_for_attention(batch)
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    output_rows: list[int] = []
    sample_chunks: list[ScheduledChunk] = []
    decodes: list[ScheduledChunk] = []
    prefills: list[PrefillSpan] = []
    for chunk in chunks:
        needed_blocks = -(-chunk.context_len // block_size)
        table = chunk.block_table
        if len(table) < needed_blocks:
            raise ValueError(f"request {chunk.request_id}: block table has {len(table)} blocks, "
                             f"its context of {chunk.context_len} tokens needs {needed_blocks}")
        q_start = len(input_ids)
        pos = range(chunk.start_position, chunk.context_len)
        input_ids.extend(chunk.token_ids)
        positions.extend(pos)
        slots.extend(table[p // block_size] * block_size + p % block_size for p in pos)
        if chunk.num_tokens == 1:
            decodes.append(chunk)
        else:
            prefills.append(PrefillSpan(q_start, len(input_ids), chunk.start_position,
                                        _tensor(table[:needed_blocks], np.int32)))
        if chunk.sample:
            output_rows.append(len(input_ids) - 1)
            sample_chunks.append(chunk)
    width = max((len(c.block_table) for c in decodes), default=0)
    flat_tables: list[int] = []
    for c in decodes:
        flat_tables.extend(c.block_table)
        flat_tables.extend([0] * (width - len(c.block_table)))
    context_lens = [c.context_len for c in decodes]
    meta = AttentionMetadata(
        slot_mapping=_tensor(slots, np.int64),
        num_decode_tokens=len(decodes),
        decode_block_tables=_tensor(flat_tables, np.int32).view(len(decodes), width),
        decode_context_lens=_tensor(context_lens, np.int32),
        max_decode_context_len=max(context_lens, default=0),
        prefills=prefills,
        block_size=block_size,
    )
    return ModelInputs(
        input_ids=_tensor(input_ids, np.int64),
        positions=_tensor(positions, np.int64),
        attention=meta,
        output_rows=_tensor(output_rows, np.int64),
        sample_chunks=sample_chunks,
    )


def _tensor(values, dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(values, dtype=dtype))
