"""CUDA graphs of steps with prefill chunks (mixed and prefill-only): one graph per padded token
count, captured once and replayed with each step's inputs copied into static buffers.

An eager forward of Llama-3-8B launches ~330 kernels, and on the host that launched them it took
about 70 us each (H100 machine, 2026-11-25): a 512-token mixed step with 64 decodes took 30 ms
eager while its kernels were busy for 12 ms. Replaying a graph removes the launch gaps. Steps
past the largest size run eagerly.

A graph of T tokens is launched for the worst case of that size and told on the device what the
step holds:
- rows [0, D) are decodes, then the prefill chunks, then padding rows up to T; padding rows have
  slot -1 (their K/V are not stored) and their outputs are never read;
- the decode kernel has min(T, max_decodes) rows; rows past the step's decodes have context 0
  and are skipped;
- the prefill kernel has max_prefills spans; spans past the step's chunks have length 0;
- outputs are computed for min(T, max_decodes + max_prefills) rows, the padding ones from row 0.
"""

from __future__ import annotations

import bisect
from typing import Callable

import torch

from adaptive_sarathi.engine.cuda_graph import ForwardFn, SplitsFn, capture_graphs
from adaptive_sarathi.engine.input_prep import ModelInputs
from adaptive_sarathi.kernels.attention import AttentionMetadata
from adaptive_sarathi.kernels.attention.metadata import PrefillLayout

# Token counts that get a graph: multiples of 64 to 1024, of 128 to 2048, then of 512 to 8192 (the
# largest budget the shipped SLO policies allow). GEMM time rises in steps of 64-128 rows anyway
# (tile quantization), and past 2048 tokens a step's kernels take tens of milliseconds, so padding
# to these costs a few percent at most, while an eager step pays tens of milliseconds of launches.
FINE_STEP, FINE_UP_TO = 64, 1024
COARSE_STEP, COARSE_UP_TO = 128, 2048
LARGE_STEP = 512
MAX_GRAPH_TOKENS = 8192
# Prefill chunks a graph has room for; a step with more runs eagerly. Spare spans cost one program
# per KV head that exits at once.
MAX_GRAPH_PREFILLS = 32


def mixed_capture_sizes(max_tokens: int) -> list[int]:
    """The padded token counts captured for steps of up to max_tokens tokens, ascending."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} is invalid: use an integer >= 1")
    sizes = [s for s in range(FINE_STEP, min(max_tokens, FINE_UP_TO) + 1, FINE_STEP)]
    sizes += range(FINE_UP_TO + COARSE_STEP, min(max_tokens, COARSE_UP_TO) + 1, COARSE_STEP)
    sizes += range(COARSE_UP_TO + LARGE_STEP, max_tokens + 1, LARGE_STEP)
    if not sizes or sizes[-1] < max_tokens:
        sizes.append(max_tokens)
    return sorted(set(sizes))


class MixedGraphs:
    """Graphs of `forward` for steps with at least one prefill chunk, of each token count in
    `sizes` (a step pads to the next one), with up to max_decodes decodes, max_prefills chunks and
    contexts up to max_context_len. Replayed outputs are views into graph-owned buffers, valid
    until the next replay."""

    def __init__(self, forward: ForwardFn, device: torch.device, sizes: list[int], max_decodes: int,
                 max_context_len: int, block_size: int, splits_for: SplitsFn,
                 max_prefills: int = MAX_GRAPH_PREFILLS):
        self.forward = forward
        self.sizes = sorted(sizes)
        self.max_decodes = max_decodes
        self.max_prefills = max_prefills
        self.max_context_len = max_context_len
        self.block_size = block_size
        self.splits_for = splits_for
        tokens, width = self.sizes[-1], -(-max_context_len // block_size)
        decodes = min(tokens, max_decodes)
        i64, i32 = dict(dtype=torch.int64, device=device), dict(dtype=torch.int32, device=device)
        self.input_ids = torch.zeros(tokens, **i64)
        self.positions = torch.zeros(tokens, **i64)
        self.slot_mapping = torch.full((tokens,), -1, **i64)
        self.output_rows = torch.zeros(min(tokens, decodes + max_prefills), **i64)
        self.decode_tables = torch.zeros(decodes, width, **i32)
        self.decode_lens = torch.zeros(decodes, **i32)
        self.spans = torch.zeros(3, max_prefills, **i32)  # q_starts, q_lens, start_positions
        self.prefill_tables = torch.zeros(max_prefills, width, **i32)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._outputs: dict[int, torch.Tensor] = {}
        self.pool = None  # the graphs' memory pool, once captured

    def capture(self, pool=None) -> None:
        """Capture every size (see capture_graphs) into `pool` (None: a new one), kept as self.pool."""
        runs = {size: self.padded_forward(size) for size in self.sizes}
        self.pool = capture_graphs(runs, self._graphs, self._outputs, pool)

    def fits(self, inputs: ModelInputs) -> bool:
        """Whether `inputs` is a step with prefill chunks that a captured graph can run."""
        meta = inputs.attention
        return (0 < len(meta.prefills) <= self.max_prefills and inputs.num_tokens <= self.sizes[-1]
                and meta.num_decode_tokens <= self.max_decodes
                and meta.max_decode_context_len <= self.max_context_len
                and all(p.context_len <= self.max_context_len for p in meta.prefills))

    def replay(self, inputs: ModelInputs) -> torch.Tensor:
        """Final hidden states [N, hidden] of the sampling rows of a step that `fits` (a view)."""
        size = self.load(inputs)
        self._graphs[size].replay()
        return self._outputs[size][:inputs.output_rows.shape[0]]

    def load(self, inputs: ModelInputs) -> int:
        """Copy the step into the static buffers, padded; returns the token count it pads to."""
        n = inputs.num_tokens
        size = self.sizes[bisect.bisect_left(self.sizes, n)]
        meta = inputs.attention
        self.input_ids[:n].copy_(inputs.input_ids, non_blocking=True)
        self.positions[:n].copy_(inputs.positions, non_blocking=True)
        self.slot_mapping[:n].copy_(meta.slot_mapping, non_blocking=True)
        self.slot_mapping[n:size].fill_(-1)  # stale slots would overwrite other requests' K/V
        rows = inputs.output_rows.shape[0]
        self.output_rows[:rows].copy_(inputs.output_rows, non_blocking=True)
        self.output_rows[rows:].zero_()  # stale rows may lie past this size's tokens
        nd = meta.num_decode_tokens
        if nd:
            width = min(meta.decode_block_tables.shape[1], self.decode_tables.shape[1])
            self.decode_tables[:nd, :width].copy_(meta.decode_block_tables[:, :width], non_blocking=True)
            self.decode_lens[:nd].copy_(meta.decode_context_lens, non_blocking=True)
        self.decode_lens[nd:].zero_()
        layout = meta.prefill_layout
        count, width = layout.block_tables.shape
        self.spans[:, :count].copy_(layout.spans, non_blocking=True)
        self.spans[:, count:].zero_()  # spare spans have q_len 0
        # Columns past a span's blocks may hold stale ids: the kernel reads only the blocks its context covers.
        self.prefill_tables[:count, :width].copy_(layout.block_tables, non_blocking=True)
        return size

    def padded_forward(self, size: int) -> Callable[[], torch.Tensor]:
        """The forward a graph of `size` tokens captures, over the static buffers (callable
        without a graph too, e.g. to check the padding on a CPU)."""
        decodes = min(size, self.max_decodes)
        layout = PrefillLayout(self.spans, self.prefill_tables, num_rows=size, max_q_len=size,
                               max_context_len=self.max_context_len)
        meta = AttentionMetadata(
            slot_mapping=self.slot_mapping[:size], num_decode_tokens=decodes,
            decode_block_tables=self.decode_tables[:decodes], decode_context_lens=self.decode_lens[:decodes],
            max_decode_context_len=self.max_context_len, prefills=[], block_size=self.block_size,
            decode_num_splits=self.splits_for(decodes), prefill_layout=layout)
        ids, pos = self.input_ids[:size], self.positions[:size]
        rows = self.output_rows[:min(size, self.output_rows.shape[0])]
        return lambda: self.forward(ids, pos, meta, rows)
