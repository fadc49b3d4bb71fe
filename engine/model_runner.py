"""prepare -> forward -> sample for one step on a real model, over a paged KV cache it owns."""

from __future__ import annotations

from typing import Callable

import torch

from adaptive_sarathi.engine.batch import ScheduledBatch
from adaptive_sarathi.engine.cuda_graph import DecodeGraphs, capture_sizes
from adaptive_sarathi.engine.input_prep import ModelInputs, prepare_inputs
from adaptive_sarathi.engine.model.llama import AttentionFn, LlamaForCausalLM
from adaptive_sarathi.engine.sampler import sample
from adaptive_sarathi.kernels.attention import AttentionMetadata


def kv_block_bytes(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one KV block takes across all layers (keys and values)."""
    c = model.config
    return 2 * c.num_layers * block_size * c.num_kv_heads * c.head_dim * torch.finfo(dtype).bits // 8


class ModelRunner:
    """Owns the model's KV cache ([num_blocks + 1, block_size, kv_heads, head_dim] per layer, K and
    V; the last block is scratch for CUDA-graph padding and never given to a request) and runs
    ScheduledBatches on it.

    decode_graphs > 0 captures CUDA graphs (engine/cuda_graph.py) for decode-only steps of up to
    that many sequences with contexts up to max_context_len; only for CUDA with an attention
    backend that never synchronizes the host (triton)."""

    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, attention: AttentionFn,
                 seed: int = 0, decode_graphs: int = 0, max_context_len: int | None = None):
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.attention = attention
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        c = model.config
        shape = (num_blocks + 1, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                           torch.zeros(shape, dtype=self.dtype, device=self.device)) for _ in range(c.num_layers)]
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.graphs: DecodeGraphs | None = None
        if decode_graphs:
            self.capture_decode_graphs(capture_sizes(decode_graphs), max_context_len or c.max_position_embeddings)

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> dict[str, int]:
        """Run the batch: writes its K/V into the cache; returns request_id -> sampled token for
        every chunk that samples."""
        inputs = prepare_inputs(batch, self.block_size)
        if self.graphs is not None and self.graphs.fits(inputs):
            logits = self.graphs.replay(inputs)
        else:
            logits = self._logits(inputs)
        chunks = inputs.sample_chunks
        if not chunks:
            return {}
        tokens = sample(logits, [c.sampling_params for c in chunks], [c.num_output_tokens for c in chunks],
                        self.generator)
        return {c.request_id: t for c, t in zip(chunks, tokens)}

    @torch.inference_mode()
    def logits_for(self, batch: ScheduledBatch) -> torch.Tensor:
        """Logits [N, vocab] of the sampling rows of `batch` (for parity checks); writes the cache."""
        return self._logits(prepare_inputs(batch, self.block_size))

    def prepared_forward(self, batch: ScheduledBatch) -> Callable[[], torch.Tensor]:
        """A callable running the batch's forward and logits on inputs moved to the device once:
        the GPU work of a step without its host work, for timing. Each call writes the batch's
        K/V into the cache again; the logits it returns are new tensors."""
        args = self._on_device(prepare_inputs(batch, self.block_size))

        @torch.inference_mode()
        def forward() -> torch.Tensor:
            return self._forward(*args)

        return forward

    def _logits(self, inputs: ModelInputs) -> torch.Tensor:
        return self._forward(*self._on_device(inputs))

    def _on_device(self, inputs: ModelInputs) -> tuple:
        dev = self.device
        return (inputs.input_ids.to(dev), inputs.positions.to(dev), inputs.attention.to(dev),
                inputs.output_rows.to(dev))

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                 output_rows: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids, positions, self.kv_caches, meta, self.attention, output_rows)
        return self.model.compute_logits(hidden)

    def capture_decode_graphs(self, sizes: list[int], max_context_len: int) -> None:
        """Capture CUDA graphs of decode-only steps of each batch size in `sizes` (contexts up to
        max_context_len) and use them from now on, replacing any captured before. CUDA with the
        triton attention backend only; writes into the scratch block of every layer's cache."""
        from adaptive_sarathi.kernels.attention.triton_decode import graph_num_splits

        self.graphs = None  # frees the previous graphs' memory pool first
        kv_heads = self.model.config.num_kv_heads
        graphs = DecodeGraphs(self._forward, self.device, sizes, max_context_len, self.block_size,
                              scratch_block=self.num_blocks,
                              splits_for=lambda b: graph_num_splits(b, kv_heads, max_context_len, self.device))
        with torch.inference_mode():
            graphs.capture()
        self.graphs = graphs
