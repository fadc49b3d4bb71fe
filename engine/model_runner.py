"""prepare -> forward -> sample for one step on a real model, over a paged KV cache it owns."""

from __future__ import annotations

from typing import Callable

import torch

from adaptive_sarathi.engine.batch import SampledTokens, ScheduledBatch, ScheduledChunk
from adaptive_sarathi.engine.cuda_graph import DecodeGraphs, capture_sizes
from adaptive_sarathi.engine.host_staging import PinnedStaging
from adaptive_sarathi.engine.input_prep import ModelInputs, prepare_inputs
from adaptive_sarathi.engine.mixed_graphs import MixedGraphs, mixed_capture_sizes
from adaptive_sarathi.engine.model.llama import AttentionFn, LlamaForCausalLM
from adaptive_sarathi.engine.sampler import logprobs, sample
from adaptive_sarathi.engine.sampling_params import SamplingParams
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
    that many sequences with contexts up to max_context_len; mixed_graph_tokens > 0 also captures
    graphs of steps with prefill chunks (engine/mixed_graphs.py) of up to that many tokens. Only
    for CUDA with an attention backend that never synchronizes the host (triton)."""

    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, attention: AttentionFn,
                 seed: int = 0, decode_graphs: int = 0, max_context_len: int | None = None,
                 mixed_graph_tokens: int = 0):
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
        self.staging = PinnedStaging(self.device) if self.device.type == "cuda" else None
        self.graphs: DecodeGraphs | None = None
        self.mixed_graphs: MixedGraphs | None = None
        window = max_context_len or c.max_position_embeddings
        if mixed_graph_tokens:
            # First: the largest graphs' memory pool is then shared with the decode graphs.
            self.capture_mixed_graphs(mixed_capture_sizes(mixed_graph_tokens), max(decode_graphs, 1), window)
        if decode_graphs:
            self.capture_decode_graphs(capture_sizes(decode_graphs), window)

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> SampledTokens:
        """Run the batch: writes its K/V into the cache; returns the sampled tokens of every
        chunk that samples (and the logprobs asked for)."""
        inputs = self.prepare(batch)
        return self.sample(inputs, self.forward(inputs))

    def prepare(self, batch: ScheduledBatch) -> ModelInputs:
        """The batch's inputs on the model's device: laid out on the host once (prepare_inputs),
        then, on CUDA, moved in one copy through pinned memory; valid until the next prepare."""
        inputs = prepare_inputs(batch, self.block_size)
        if self.staging is None:
            return inputs.to(self.device)
        return inputs.with_tensors(self.staging.move(inputs.tensors()))

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        """Float32 logits [N, vocab] of the step's sampling rows, from a CUDA graph when one fits
        the step, else eagerly; writes the step's K/V into the cache."""
        graphs = self.graphs_for(inputs)
        if graphs is None:
            return self.eager_forward(inputs)
        # The LM head runs outside the graphs: a [rows, vocab] float32 output per captured size
        # would hold gigabytes of graph memory.
        return self.model.compute_logits(graphs.replay(inputs))

    def eager_forward(self, inputs: ModelInputs) -> torch.Tensor:
        """forward() without graphs: what a graph's replay must reproduce."""
        return self.model.compute_logits(self.hidden(inputs))

    def hidden(self, inputs: ModelInputs) -> torch.Tensor:
        """Final hidden states [N, hidden] of the step's sampling rows, eagerly."""
        return self._hidden(inputs.input_ids, inputs.positions, inputs.attention, inputs.output_rows)

    def sample(self, inputs: ModelInputs, logits: torch.Tensor) -> SampledTokens:
        """The token drawn from each sampling chunk's row of `logits` (one device sync for all),
        and the logprobs of the chunks that ask for them (computed only then)."""
        chunks = inputs.sample_chunks
        if not chunks:
            return SampledTokens({})
        params = [c.sampling_params for c in chunks]
        histories = [c.history for c in chunks] if any(c.history is not None for c in chunks) else None
        tokens = sample(logits, params, [c.num_output_tokens for c in chunks], self.generator, histories)
        sampled = SampledTokens({c.request_id: t for c, t in zip(chunks, tokens)})
        if any(p.logprobs is not None for p in params):
            for c, lp in zip(chunks, logprobs(logits, tokens, [p.logprobs for p in params])):
                if lp is not None:
                    sampled.logprobs[c.request_id] = lp
        return sampled

    @torch.inference_mode()
    def logits_for(self, batch: ScheduledBatch) -> torch.Tensor:
        """Eager logits [N, vocab] of the sampling rows of `batch` (for parity checks); writes the cache."""
        return self.eager_forward(self.prepare(batch))

    def prepared_forward(self, batch: ScheduledBatch) -> Callable[[], torch.Tensor]:
        """A callable running the batch's eager forward and logits on inputs moved to the device
        once (held by the callable, not staged): the GPU work of a step without its host work, for
        timing. Each call writes the batch's K/V into the cache again; it returns new logits."""
        inputs = prepare_inputs(batch, self.block_size).to(self.device)

        @torch.inference_mode()
        def forward() -> torch.Tensor:
            return self.eager_forward(inputs)

        return forward

    @torch.inference_mode()
    def warm_up(self, max_context_len: int) -> None:
        """Compile, before the first request, the kernels of the steps that run eagerly (those the
        CUDA graphs do not cover): decodes with split-K and without, beside a prefill chunk. Their
        first launch otherwise compiles them mid-serving, a second or more each. Every token of
        these steps reads and writes only the scratch block (the cache's last), which no request
        owns."""

        def chunk(i: int, tokens: int, context: int) -> ScheduledChunk:
            table = (self.num_blocks,) * -(-context // self.block_size)
            return ScheduledChunk(f"warm-up-{i}", (0,) * tokens, context - tokens, table, True, SamplingParams(),
                                  0, tokens > 1)

        long_context = min(max_context_len, 4096)  # long enough for the split-K policy to split
        steps = [[chunk(0, 1, long_context), chunk(1, 2, 2)],  # one decode: split-K
                 [chunk(i, 1, 2) for i in range(256)] + [chunk(256, 2, 2)]]  # many: no split
        for batch in steps:
            self.eager_forward(self.prepare(ScheduledBatch(batch)))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def graphs_for(self, inputs: ModelInputs) -> DecodeGraphs | MixedGraphs | None:
        """The captured graphs that can run this step, or None when it runs eagerly."""
        for graphs in (self.graphs, self.mixed_graphs):
            if graphs is not None and graphs.fits(inputs):
                return graphs
        return None

    def _hidden(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                output_rows: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions, self.kv_caches, meta, self.attention, output_rows)

    def capture_decode_graphs(self, sizes: list[int], max_context_len: int) -> None:
        """Capture CUDA graphs of decode-only steps of each batch size in `sizes` (contexts up to
        max_context_len) and use them from now on, replacing any captured before. CUDA with the
        triton attention backend only; writes into the scratch block of every layer's cache."""
        self.graphs = None  # frees the previous graphs' memory pool first
        graphs = DecodeGraphs(self._hidden, self.device, sizes, max_context_len, self.block_size,
                              scratch_block=self.num_blocks, splits_for=self._splits_for(max_context_len))
        with torch.inference_mode():
            graphs.capture(self._pool())
        self.graphs = graphs

    def capture_mixed_graphs(self, sizes: list[int], max_decodes: int, max_context_len: int) -> None:
        """Capture CUDA graphs of steps with prefill chunks, of each token count in `sizes`, with up
        to max_decodes decodes and contexts up to max_context_len; use them from now on, replacing
        any captured before. CUDA with the triton attention backend only."""
        self.mixed_graphs = None
        graphs = MixedGraphs(self._hidden, self.device, sizes, max_decodes, max_context_len, self.block_size,
                             splits_for=self._splits_for(max_context_len))
        with torch.inference_mode():
            graphs.capture(self._pool())
        self.mixed_graphs = graphs

    def _pool(self):
        """The memory pool of the graphs still held, so a new capture shares it (graphs replay one
        at a time, and each one's logits are read before the next replay)."""
        held = self.graphs or self.mixed_graphs
        return held.pool if held is not None else None

    def _splits_for(self, max_context_len: int) -> Callable[[int], int]:
        from adaptive_sarathi.kernels.attention.triton_decode import graph_num_splits

        kv_heads = self.model.config.num_kv_heads
        return lambda decodes: graph_num_splits(decodes, kv_heads, max_context_len, self.device)
