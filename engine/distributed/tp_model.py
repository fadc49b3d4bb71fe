"""One rank's slice of a Llama-family model: the plain LlamaForCausalLM built from the rank-local
config (its heads, KV heads, intermediate columns and vocabulary rows), with the row-parallel
projections and the embedding swapped for their communicating versions and the logits gathered."""

from __future__ import annotations

from typing import Iterable

import torch

from adaptive_sarathi.engine.distributed.group import TensorParallelGroup
from adaptive_sarathi.engine.distributed.layers import RowParallelLinear, VocabParallelEmbedding
from adaptive_sarathi.engine.distributed.sharding import ShardSpec
from adaptive_sarathi.engine.model.config import ModelConfig
from adaptive_sarathi.engine.model.llama import LlamaForCausalLM


class TensorParallelLlama(LlamaForCausalLM):
    """`config` is the rank-local config (what the KV cache and the runner size themselves by);
    `full_config` the whole model's. forward() returns the same hidden states on every rank;
    compute_logits() returns the full-vocabulary logits on every rank. Every rank must call both
    in the same order (they are collectives)."""

    def __init__(self, full_config: ModelConfig, group: TensorParallelGroup, max_positions: int | None = None):
        shard = ShardSpec(full_config, group.rank, group.size)
        super().__init__(shard.local_config(), max_positions)
        self.full_config = full_config
        self.shard = shard
        self.tp_group = group
        for layer in self.layers:
            layer.self_attn.o_proj = RowParallelLinear(layer.self_attn.o_proj, group)
            layer.mlp.down_proj = RowParallelLinear(layer.mlp.down_proj, group)
        # Adopting the table keeps a tied lm_head sharing it.
        self.embed_tokens = VocabParallelEmbedding(self.embed_tokens, shard.vocab_start, group)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits [N, vocab] over the whole vocabulary (padding rows trimmed)."""
        if hidden.shape[0] == 0:  # no row samples: every rank sees the same batch, so all skip the gather
            return torch.empty((0, self.full_config.vocab_size), dtype=torch.float32, device=hidden.device)
        local = super().compute_logits(hidden)
        return self.tp_group.all_gather_last_dim(local)[:, :self.full_config.vocab_size]

    @torch.no_grad()
    def load_hf_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full Hugging Face tensors, keeping this rank's slice of each (ValueError as in the
        plain model for unknown, misshapen or missing tensors)."""
        super().load_hf_weights((name, self.shard.shard_hf(name, t)) for name, t in weights)
