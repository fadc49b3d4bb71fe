"""Where each token of a mixed prefill+decode step reads and writes the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass
class PrefillSpan:
    """One prefill chunk: query rows [q_start, q_end) sit at positions start_position onward and
    attend causally to every cached position before them. block_table covers the whole context."""

    q_start: int
    q_end: int
    start_position: int
    block_table: torch.Tensor  # int32 [num_blocks_of_this_request]

    @property
    def context_len(self) -> int:
        return self.start_position + self.q_end - self.q_start


@dataclass(frozen=True)
class PrefillLayout:
    """The prefill spans of a step as device tensors, for kernels that handle every chunk in one
    launch. Row i describes span i; block_tables is padded with 0 past each span's blocks.

    A layout padded for a CUDA graph may end with spans of q_len 0 and bound num_rows, max_q_len
    and max_context_len from above instead of giving them exactly."""

    q_starts: torch.Tensor  # int32 [num_prefills]
    q_lens: torch.Tensor  # int32 [num_prefills]
    start_positions: torch.Tensor  # int32 [num_prefills]
    block_tables: torch.Tensor  # int32 [num_prefills, max_blocks]
    num_rows: int  # query tokens of all spans
    max_q_len: int  # tokens
    max_context_len: int  # tokens


@dataclass
class AttentionMetadata:
    """Layout of one step's tokens: the first `num_decode_tokens` rows are single-token decodes
    (one per sequence), the rest are prefill chunks described by `prefills`.

    slot_mapping[i] is the cache slot (block_id * block_size + offset) where token i's K/V go.
    decode_block_tables is [num_decodes, max_blocks] padded with 0; decode_context_lens counts the
    new token too. Tensors live on the model's device; the caller owns them for the whole step.
    decode_num_splits, when set, asks split-K decode kernels for that many partitions of each
    sequence's own context, making the launch independent of the contexts (for CUDA graphs).
    padded_prefills, when set, is the prefill layout itself, prebuilt with padding (see
    PrefillLayout) in buffers a CUDA graph replays; `prefills` is then empty. Padded decode rows
    have a context length of 0 and are skipped.
    """

    slot_mapping: torch.Tensor  # int64 [num_tokens]
    num_decode_tokens: int
    decode_block_tables: torch.Tensor  # int32 [num_decodes, max_blocks]
    decode_context_lens: torch.Tensor  # int32 [num_decodes]
    max_decode_context_len: int
    prefills: list[PrefillSpan]
    block_size: int
    decode_num_splits: int | None = None
    padded_prefills: PrefillLayout | None = None

    def to(self, device: torch.device) -> "AttentionMetadata":
        """A copy with every tensor moved to `device` (non-blocking where possible)."""
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return AttentionMetadata(
            slot_mapping=move(self.slot_mapping),
            num_decode_tokens=self.num_decode_tokens,
            decode_block_tables=move(self.decode_block_tables),
            decode_context_lens=move(self.decode_context_lens),
            max_decode_context_len=self.max_decode_context_len,
            prefills=[PrefillSpan(p.q_start, p.q_end, p.start_position, move(p.block_table)) for p in self.prefills],
            block_size=self.block_size,
            decode_num_splits=self.decode_num_splits,
            padded_prefills=self.padded_prefills,
        )

    @cached_property
    def prefill_layout(self) -> PrefillLayout | None:
        """`prefills` as device tensors on slot_mapping's device; None when the step has no prefill.
        Built on first use and then shared by every layer of the step (a copy made by `to` builds
        its own). The returned tensors belong to this metadata: do not modify them."""
        if self.padded_prefills is not None:
            return self.padded_prefills
        if not self.prefills:
            return None
        device = self.slot_mapping.device
        spans = torch.tensor([[p.q_start for p in self.prefills],
                              [p.q_end - p.q_start for p in self.prefills],
                              [p.start_position for p in self.prefills]], dtype=torch.int32)
        spans = spans.to(device, non_blocking=True)
        tables = torch.nn.utils.rnn.pad_sequence([p.block_table.to(device, torch.int32) for p in self.prefills],
                                                 batch_first=True)
        return PrefillLayout(q_starts=spans[0], q_lens=spans[1], start_positions=spans[2], block_tables=tables,
                             num_rows=sum(p.q_end - p.q_start for p in self.prefills),
                             max_q_len=max(p.q_end - p.q_start for p in self.prefills),
                             max_context_len=max(p.context_len for p in self.prefills))
