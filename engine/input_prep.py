"""Step inputs from a ScheduledBatch: a pure function of the batch, testable on the CPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk, block_table_array
from adaptive_sarathi.kernels.attention import AttentionMetadata, PrefillSpan
from adaptive_sarathi.kernels.attention.metadata import PrefillLayout


@dataclass
class ModelInputs:
    """Flattened tokens of one step, decodes first then prefill chunks.

    output_rows[i] is the row whose hidden state samples for sample_chunks[i]. prepare_inputs
    makes fresh CPU tensors the caller owns, the prefill layout included (built once, for the
    eager kernels and the CUDA graphs alike).
    """

    input_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    attention: AttentionMetadata
    output_rows: torch.Tensor  # int64 [N]
    sample_chunks: list[ScheduledChunk]

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the step, in the order `with_tensors` takes them back."""
        return [self.input_ids, self.positions, self.output_rows] + self.attention.tensors()

    def with_tensors(self, tensors: list[torch.Tensor]) -> "ModelInputs":
        """The same step over `tensors` (same contents as `tensors()`, e.g. copies on a device)."""
        input_ids, positions, output_rows, *attention = tensors
        return ModelInputs(input_ids, positions, self.attention.with_tensors(attention), output_rows,
                           self.sample_chunks)

    def to(self, device: torch.device) -> "ModelInputs":
        """A copy on `device` (each tensor copied on its own; the runner stages them in one copy)."""
        return self.with_tensors([t.to(device, non_blocking=True) for t in self.tensors()])


def order_for_attention(batch: ScheduledBatch) -> list[ScheduledChunk]:
    """Single-token chunks first (they attend as decodes), then longer chunks, each group in
    schedule order."""
    singles, multis = _split_for_attention(batch)
    return singles + multis


def _split_for_attention(batch: ScheduledBatch) -> tuple[list[ScheduledChunk], list[ScheduledChunk]]:
    """(single-token chunks, longer chunks) of `batch`, each in schedule order; chunks without
    tokens are left out."""
    chunks = batch.chunks
    return [c for c in chunks if len(c.token_ids) == 1], [c for c in chunks if len(c.token_ids) > 1]


def prepare_inputs(batch: ScheduledBatch, block_size: int) -> ModelInputs:
    """Positions, slot mapping, block tables and sampling rows for `batch`.

    Raises ValueError when a chunk's block table does not cover its context (a scheduler bug)."""
    # This runs on the host every step while the GPU waits. Decode rows (one token each) are
    # gathered field by field and computed with whole-array numpy operations, prefill rows with
    # one numpy range per chunk; block tables are copied from each BlockTable's cached array
    # instead of converting every block id of every request every step.
    decodes, prefill_chunks = _split_for_attention(batch)
    num_decodes = len(decodes)
    decode_positions = np.array([c.start_position for c in decodes], dtype=np.int64)
    decode_tables = _decode_block_tables(decodes, decode_positions, block_size)
    decode_slots = (decode_tables[np.arange(num_decodes), decode_positions // block_size].astype(np.int64)
                    * block_size + decode_positions % block_size)
    input_ids = [c.token_ids[0] for c in decodes]
    positions, slots = [decode_positions], [decode_slots]
    output_rows = [i for i, c in enumerate(decodes) if c.sample]
    prefills: list[PrefillSpan] = []
    covering = [_covering_blocks(chunk, block_size) for chunk in prefill_chunks]
    tables = _padded(covering)
    for chunk, table, row in zip(prefill_chunks, covering, tables):
        q_start = len(input_ids)
        pos = np.arange(chunk.start_position, chunk.context_len, dtype=np.int64)
        input_ids.extend(chunk.token_ids)
        positions.append(pos)
        slots.append(table[pos // block_size].astype(np.int64) * block_size + pos % block_size)
        prefills.append(PrefillSpan(q_start, len(input_ids), chunk.start_position,
                                    torch.from_numpy(row[:len(table)])))
        if chunk.sample:
            output_rows.append(len(input_ids) - 1)
    context_lens = decode_positions + 1
    meta = AttentionMetadata(
        slot_mapping=torch.from_numpy(np.concatenate(slots)),
        num_decode_tokens=num_decodes,
        decode_block_tables=torch.from_numpy(decode_tables),
        decode_context_lens=torch.from_numpy(context_lens.astype(np.int32)),
        max_decode_context_len=int(context_lens.max()) if num_decodes else 0,
        prefills=prefills,
        block_size=block_size,
        prefill_layout=_layout(prefills, tables),
    )
    return ModelInputs(
        input_ids=_tensor(input_ids, np.int64),
        positions=torch.from_numpy(np.concatenate(positions)),
        attention=meta,
        output_rows=_tensor(output_rows, np.int64),
        sample_chunks=[c for c in decodes if c.sample] + [c for c in prefill_chunks if c.sample],
    )


def _decode_block_tables(decodes: list[ScheduledChunk], positions: np.ndarray, block_size: int) -> np.ndarray:
    """Block tables of single-token chunks as a fresh int32 array [len(decodes), longest table],
    each row padded with 0. Raises ValueError naming the first chunk whose table does not cover
    its position."""
    if not decodes:
        return np.zeros((0, 0), dtype=np.int32)
    lengths = np.array([len(c.block_table) for c in decodes], dtype=np.int64)
    short = np.flatnonzero(lengths * block_size <= positions)
    if short.size:
        _covering_blocks(decodes[short[0]], block_size)  # raises, naming the request
    width = int(lengths.max())
    flat = np.concatenate([block_table_array(c.block_table) for c in decodes])
    if flat.size == len(decodes) * width:  # every table equally long: no padding to place
        return flat.reshape(len(decodes), width)
    tables = np.zeros((len(decodes), width), dtype=np.int32)
    tables[np.arange(width) < lengths[:, None]] = flat  # row by row, in order
    return tables


def _padded(tables: list[np.ndarray]) -> np.ndarray:
    """The int32 tables as rows of one fresh array, each padded with 0 to the longest."""
    padded = np.zeros((len(tables), max((len(t) for t in tables), default=0)), dtype=np.int32)
    for row, table in zip(padded, tables):
        row[:len(table)] = table
    return padded


def _layout(prefills: list[PrefillSpan], tables: np.ndarray) -> PrefillLayout | None:
    """The step's prefill layout on the host over the padded `tables`; None without prefills."""
    if not prefills:
        return None
    spans = np.array([[p.q_start for p in prefills], [p.q_end - p.q_start for p in prefills],
                      [p.start_position for p in prefills]], dtype=np.int32)
    return PrefillLayout(torch.from_numpy(spans), torch.from_numpy(tables), num_rows=int(spans[1].sum()),
                         max_q_len=int(spans[1].max()), max_context_len=max(p.context_len for p in prefills))


def _covering_blocks(chunk: ScheduledChunk, block_size: int) -> np.ndarray:
    """The blocks of `chunk`'s table that hold its context, as int32 (read-only). Raises ValueError when the table is too short (a scheduler bug)."""
    needed_blocks = -(-chunk.context_len // block_size)
    table = chunk.block_table
    if len(table) < needed_blocks:
        raise ValueError(f"request {chunk.request_id}: block table has {len(table)} blocks, "
                         f"its context of {chunk.context_len} tokens needs {needed_blocks}")
    return block_table_array(table)[:needed_blocks]


def _tensor(values, dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(values, dtype=dtype))
