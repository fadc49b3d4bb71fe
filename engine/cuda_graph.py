"""CUDA graphs of decode-only steps: one graph per padded batch size, captured once and replayed
with each step's inputs copied into static buffers.

A decode step of a large model launches a few hundred small kernels whose launch gaps, not the
kernels, set the step time at small and medium batches (measured on an H100 with Llama-3-8B:
25 ms eager against 8-16 ms replayed). Steps with prefill chunks have graphs of their own
(engine/mixed_graphs.py).
"""

from __future__ import annotations

import bisect
from typing import Callable

import torch

from adaptive_sarathi.engine.input_prep import ModelInputs
from adaptive_sarathi.kernels.attention import AttentionMetadata

# Batch sizes that get a graph: every power of two to 8, then multiples of 16. A batch pads to the
# next size; the padding rows cost little because decode steps are bound by reading the weights.
SMALL_SIZES = (1, 2, 4, 8)
SIZE_STEP = 16

# (input_ids [T], positions [T], metadata, output_rows [N]) -> final hidden states [N, hidden]
ForwardFn = Callable[[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor], torch.Tensor]
SplitsFn = Callable[[int], int]  # batch size -> split-K partitions per sequence to capture


def decode_graphs_supported(device: torch.device, attention_backend: str) -> bool:
    """Whether decode steps on `device` with `attention_backend` ("auto" allowed) can be captured:
    CUDA with the triton kernels, which never synchronize the host."""
    from adaptive_sarathi.kernels.attention.backends import resolve_backend_name

    return device.type == "cuda" and resolve_backend_name(device, attention_backend) == "triton"


def capture_graphs(runs: dict[int, Callable[[], torch.Tensor]], graphs: dict[int, torch.cuda.CUDAGraph],
                   outputs: dict[int, torch.Tensor], pool=None):
    """Capture runs[size] for every size into graphs[size], its output into outputs[size]; largest
    first, all in one memory pool (`pool`, or a new one), so smaller graphs reuse the largest's
    memory. Runs each once beforehand, outside the capture, to compile kernels. Returns the pool."""
    for size in sorted(runs, reverse=True):
        run = runs[size]
        run()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs[size] = run()
        pool = graph.pool()
        graphs[size] = graph
    torch.cuda.synchronize()
    return pool


def capture_sizes(max_batch: int) -> list[int]:
    """The padded batch sizes captured for batches of up to max_batch decodes, ascending."""
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch} is invalid: use an integer >= 1")
    sizes = [s for s in SMALL_SIZES if s < max_batch]
    sizes += range(SIZE_STEP, max_batch, SIZE_STEP)
    return sorted(set(sizes) | {max_batch})


class DecodeGraphs:
    """Graphs of `forward` for decode-only steps of each batch size in `sizes` (a batch pads to
    the next captured size; see capture_sizes) whose contexts fit max_context_len tokens.

    Padding rows write their K/V into `scratch_block`, a cache block no request owns, and attend
    to that one position; their outputs are dropped. Replayed outputs are views into graph-owned
    buffers, valid until the next replay.
    """

    def __init__(self, forward: ForwardFn, device: torch.device, sizes: list[int], max_context_len: int,
                 block_size: int, scratch_block: int, splits_for: SplitsFn):
        self.forward = forward
        self.sizes = sorted(sizes)
        self.max_context_len = max_context_len
        self.block_size = block_size
        self.scratch_slot = scratch_block * block_size
        self.splits_for = splits_for
        n, width = self.sizes[-1], -(-max_context_len // block_size)
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((n,), self.scratch_slot, dtype=torch.int64, device=device)
        # Rows past a sequence's blocks may hold stale block ids: the kernel reads only the blocks
        # its context length covers.
        self.block_tables = torch.full((n, width), scratch_block, dtype=torch.int32, device=device)
        self.context_lens = torch.ones(n, dtype=torch.int32, device=device)
        self.output_rows = torch.arange(n, dtype=torch.int64, device=device)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._outputs: dict[int, torch.Tensor] = {}
        self.pool = None  # the graphs' memory pool, once captured

    def capture(self, pool=None) -> None:
        """Capture every size (see capture_graphs) into `pool` (None: a new one), kept as self.pool."""
        runs = {size: self._runner(size) for size in self.sizes}
        self.pool = capture_graphs(runs, self._graphs, self._outputs, pool)

    def fits(self, inputs: ModelInputs) -> bool:
        """Whether `inputs` is a decode-only step a captured graph can run: one token per sequence
        (a decode, or a prompt's 1-token chunk), at most max_batch of them, every context within
        max_context_len."""
        meta = inputs.attention
        n = inputs.num_tokens
        return (n > 0 and meta.num_decode_tokens == n and n <= self.sizes[-1]
                and meta.max_decode_context_len <= self.max_context_len)

    def replay(self, inputs: ModelInputs) -> torch.Tensor:
        """Final hidden states [N, hidden] of the sampling rows of a step that `fits` (a view into
        the graph's buffer when every row samples)."""
        n = inputs.num_tokens
        size = self.sizes[bisect.bisect_left(self.sizes, n)]
        meta = inputs.attention
        tables = meta.decode_block_tables
        self.input_ids[:n].copy_(inputs.input_ids, non_blocking=True)
        self.positions[:n].copy_(inputs.positions, non_blocking=True)
        self.slot_mapping[:n].copy_(meta.slot_mapping, non_blocking=True)
        self.context_lens[:n].copy_(meta.decode_context_lens, non_blocking=True)
        # Tables may list blocks reserved past the context; the graph's width covers the context.
        width = min(tables.shape[1], self.block_tables.shape[1])
        self.block_tables[:n, :width].copy_(tables[:, :width], non_blocking=True)
        if size > n:
            self.slot_mapping[n:size].fill_(self.scratch_slot)
            self.context_lens[n:size].fill_(1)
        self._graphs[size].replay()
        if len(inputs.sample_chunks) == n:
            return self._outputs[size][:n]
        # Prompt chunks of one token that do not reach the prompt's end sample nothing.
        return self._outputs[size][inputs.output_rows.to(self.input_ids.device)]

    def _runner(self, size: int) -> Callable[[], torch.Tensor]:
        meta = AttentionMetadata(
            slot_mapping=self.slot_mapping[:size], num_decode_tokens=size,
            decode_block_tables=self.block_tables[:size], decode_context_lens=self.context_lens[:size],
            max_decode_context_len=self.max_context_len, prefills=[], block_size=self.block_size,
            decode_num_splits=self.splits_for(size))
        ids, pos, rows = self.input_ids[:size], self.positions[:size], self.output_rows[:size]
        return lambda: self.forward(ids, pos, meta, rows)
