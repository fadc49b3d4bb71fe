"""Where each token of a mixed prefill+decode step reads and writes the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass

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
    """The prefill spans of a step as tensors, for kernels that handle every chunk in one launch.
    Column i of `spans` describes span i (rows: q_starts, q_lens, start_positions); block_tables
    row i is padded with 0 past span i's blocks.

    A layout padded for a CUDA graph may end with spans of q_len 0 and bound num_rows, max_q_len
    and max_context_len from above instead of giving them exactly."""

    spans: torch.Tensor  # int32 [3, num_prefills], contiguous (the kernels read each row as an array)
    block_tables: torch.Tensor  # int32 [num_prefills, max_blocks]
    num_rows: int  # query tokens of all spans
    max_q_len: int  # tokens
    max_context_len: int  # tokens

    @property
    def q_starts(self) -> torch.Tensor:
        return self.spans[0]

    @property
    def q_lens(self) -> torch.Tensor:
        return self.spans[1]

    @property
    def start_positions(self) -> torch.Tensor:
        return self.spans[2]

    @classmethod
    def of(cls, prefills: list[PrefillSpan], device: torch.device) -> "PrefillLayout":
        """The exact layout of `prefills` (at least one), built on the host and moved to `device`."""
        spans = torch.tensor([[p.q_start for p in prefills], [p.q_end - p.q_start for p in prefills],
                              [p.start_position for p in prefills]], dtype=torch.int32)
        tables = torch.zeros(len(prefills), max(p.block_table.shape[0] for p in prefills), dtype=torch.int32)
        for i, p in enumerate(prefills):
            tables[i, :p.block_table.shape[0]] = p.block_table
        return cls(spans.to(device, non_blocking=True), tables.to(device, non_blocking=True),
                   num_rows=sum(p.q_end - p.q_start for p in prefills),
                   max_q_len=max(p.q_end - p.q_start for p in prefills),
                   max_context_len=max(p.context_len for p in prefills))

    def with_tensors(self, spans: torch.Tensor, block_tables: torch.Tensor) -> "PrefillLayout":
        """The same layout over other tensors of the same contents (e.g. copies on another device)."""
        return PrefillLayout(spans, block_tables, self.num_rows, self.max_q_len, self.max_context_len)


@dataclass
class AttentionMetadata:
    """Layout of one step's tokens: the first `num_decode_tokens` rows are single-token decodes
    (one per sequence), the rest are prefill chunks described by `prefills`.

    slot_mapping[i] is the cache slot (block_id * block_size + offset) where token i's K/V go.
    decode_block_tables is [num_decodes, max_blocks] padded with 0; decode_context_lens counts the
    new token too. Tensors live on the model's device; the caller owns them for the whole step.
    decode_num_splits, when set, asks split-K decode kernels for that many partitions of each
    sequence's own context, making the launch independent of the contexts (for CUDA graphs).
    prefill_layout is `prefills` as one-launch tensors on the same device: built from `prefills`
    when not given; a CUDA graph gives it prebuilt with padding (see PrefillLayout), and `prefills`
    is then empty. Padded decode rows have a context length of 0 and are skipped.
    """

    slot_mapping: torch.Tensor  # int64 [num_tokens]
    num_decode_tokens: int
    decode_block_tables: torch.Tensor  # int32 [num_decodes, max_blocks]
    decode_context_lens: torch.Tensor  # int32 [num_decodes]
    max_decode_context_len: int
    prefills: list[PrefillSpan]
    block_size: int
    decode_num_splits: int | None = None
    prefill_layout: PrefillLayout | None = None

    def __post_init__(self) -> None:
        if self.prefill_layout is None and self.prefills:
            self.prefill_layout = PrefillLayout.of(self.prefills, self.slot_mapping.device)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the metadata holds, in the order `with_tensors` takes them back."""
        own = [self.slot_mapping, self.decode_block_tables, self.decode_context_lens]
        layout = self.prefill_layout
        return own + ([layout.spans, layout.block_tables] if layout is not None else [])

    def with_tensors(self, tensors: list[torch.Tensor]) -> "AttentionMetadata":
        """The same metadata over `tensors` (same contents as `tensors()`, e.g. on another device);
        each span's block table becomes a view of the new layout's."""
        slots, tables, lens, *rest = tensors
        layout = self.prefill_layout.with_tensors(*rest) if rest else None
        prefills = [PrefillSpan(p.q_start, p.q_end, p.start_position, layout.block_tables[i, :p.block_table.shape[0]])
                    for i, p in enumerate(self.prefills)]
        return AttentionMetadata(slots, self.num_decode_tokens, tables, lens, self.max_decode_context_len, prefills,
                                 self.block_size, self.decode_num_splits, layout)

    def to(self, device: torch.device) -> "AttentionMetadata":
        """A copy with every tensor moved to `device` (non-blocking where possible)."""
        return self.with_tensors([t.to(device, non_blocking=True) for t in self.tensors()])
