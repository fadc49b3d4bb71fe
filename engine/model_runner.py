"""prepare -> forward -> sample for one step on a real model, over a paged KV cache it owns."""

from __future__ import annotations

import torch

from adaptive_sarathi.engine.batch import ScheduledBatch
from adaptive_sarathi.engine.input_prep import ModelInputs, prepare_inputs
from adaptive_sarathi.engine.model.llama import AttentionFn, LlamaForCausalLM
from adaptive_sarathi.engine.sampler import sample


def kv_block_bytes(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one KV block takes across all layers (keys and values)."""
    c = model.config
    return 2 * c.num_layers * block_size * c.num_kv_heads * c.head_dim * torch.finfo(dtype).bits // 8


class ModelRunner:
    """Owns the model's KV cache ([num_blocks, block_size, kv_heads, head_dim] per layer, K and V)
    and runs ScheduledBatches on it."""

    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, attention: AttentionFn,
                 seed: int = 0):
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.attention = attention
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        c = model.config
        shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                           torch.zeros(shape, dtype=self.dtype, device=self.device)) for _ in range(c.num_layers)]
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> dict[str, int]:
        """Run the batch: writes its K/V into the cache; returns request_id -> sampled token for
        every chunk that samples."""
        inputs = prepare_inputs(batch, self.block_size)
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

    def _logits(self, inputs: ModelInputs) -> torch.Tensor:
        dev = self.device
        hidden = self.model(inputs.input_ids.to(dev), inputs.positions.to(dev), self.kv_caches,
                            inputs.attention.to(dev), self.attention, inputs.output_rows.to(dev))
        return self.model.compute_logits(hidden)
