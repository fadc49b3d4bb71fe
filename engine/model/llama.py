"""Llama-family decoder in plain torch (Llama 2/3, Mistral, Qwen2-style biases, SmolLM2).

Tokens of a step arrive flattened ([T]) with their positions; attention reads and writes the paged
KV cache through AttentionMetadata, so prefill chunks and decodes share one forward pass.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from adaptive_sarathi.engine.model.config import ModelConfig
from adaptive_sarathi.engine.model.rope import RotaryEmbedding
from adaptive_sarathi.kernels.attention import AttentionMetadata
from adaptive_sarathi.kernels.fused import fused_add_rms_norm, rms_norm, rope_and_write_kv, silu_and_mul

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionMetadata, float], torch.Tensor]


class RMSNorm(nn.Module):
    """Normalizes in float32 whatever the activation dtype; the output is in the weight's dtype
    (the model's compute dtype) even when the residual stream is float32."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, out_dtype=self.weight.dtype)

    def add_and_norm(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual += x (in place), then the norm of the sum."""
        return fused_add_rms_norm(x, residual, self.weight, self.eps, out_dtype=self.weight.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=False)
        self.scale = self.head_dim ** -0.5

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rope: RotaryEmbedding,
                kv_cache: tuple[torch.Tensor, torch.Tensor], meta: AttentionMetadata,
                attention: AttentionFn) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        t = x.shape[0]
        k_cache, v_cache = kv_cache
        # Rotates q in place inside the qkv buffer; rotated k and v go straight into the cache.
        q = rope_and_write_kv(q.view(t, self.num_heads, self.head_dim), k.view(t, self.num_kv_heads, self.head_dim),
                              v.view(t, self.num_kv_heads, self.head_dim), positions, rope.cos, rope.sin,
                              k_cache, v_cache, meta.slot_mapping)
        out = attention(q, k_cache, v_cache, meta, self.scale)
        return self.o_proj(out.reshape(t, self.q_size))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, residual, positions, rope, kv_cache, meta, attention):
        """Adds x (the previous layer's output) to the residual stream in place, runs the layer
        and returns its output, to be added by the next layer or the final norm."""
        h = self.self_attn(self.input_layernorm.add_and_norm(x, residual), positions, rope, kv_cache, meta, attention)
        return self.mlp(self.post_attention_layernorm.add_and_norm(h, residual))


class LlamaForCausalLM(nn.Module):
    """The decoder plus LM head. forward() returns final hidden states of the given rows only, so
    logits are computed just for the tokens that sample."""

    def __init__(self, config: ModelConfig, max_positions: int | None = None):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rope = RotaryEmbedding(config, max_positions or config.max_position_embeddings)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta: AttentionMetadata,
                attention: AttentionFn, output_rows: torch.Tensor) -> torch.Tensor:
        """Run the step's flattened tokens; writes their K/V into kv_caches (mutated); returns the
        normalized hidden states of `output_rows` [N, hidden]."""
        x = self.embed_tokens(input_ids)
        # The residual stream stays in float32 whatever the compute dtype: in bf16 every layer's
        # add would round the running sum to 8 mantissa bits, the largest error a bf16 forward has
        # against float32 (measured on SmolLM2: logits' mean relative error 2.2e-2 -> 1.5e-2).
        residual = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for layer, kv in zip(self.layers, kv_caches):
            x = layer(x, residual, positions, self.rope, kv, meta, attention)
        rows = residual[output_rows]
        return self.norm.add_and_norm(x[output_rows], rows)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits [N, vocab] of hidden [N, hidden_size] (a new tensor)."""
        return float32_logits(hidden, self.lm_head.weight)

    @torch.no_grad()
    def load_hf_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face-named tensors into the fused parameters. Raises ValueError naming a
        tensor that is unknown or has the wrong shape, or a parameter that was never loaded."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for hf_name, tensor in weights:
            target = _map_hf_name(hf_name, self.config)
            if target is None:
                continue
            name, offset = target
            if name not in params:
                raise ValueError(f"weight {hf_name!r} has no place in {self.config.architecture}")
            param = params[name]
            rows = tensor.shape[0]
            dest = param.data[offset:offset + rows] if offset is not None else param.data
            if dest.shape != tensor.shape:
                raise ValueError(f"weight {hf_name!r} has shape {tuple(tensor.shape)}, expected {tuple(dest.shape)}")
            dest.copy_(tensor)
            loaded.add(name if offset is None else f"{name}@{offset}")
        expected = _expected_loads(self)
        missing = expected - loaded
        if missing:
            raise ValueError(f"weights are missing {len(missing)} tensors, e.g. {sorted(missing)[:3]}")


def float32_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """hidden @ weight.T with a float32 result. Rounding logits to bf16 (8 mantissa bits, steps of
    0.125 near 20) makes near-ties common and flips greedy choices; on CUDA the product keeps the
    fp32 accumulator without an fp32 copy of the weight, elsewhere both are upcast."""
    if weight.dtype == torch.float32:
        return F.linear(hidden.float(), weight)
    if hidden.is_cuda:
        return torch.mm(hidden.to(weight.dtype), weight.t(), out_dtype=torch.float32)
    return F.linear(hidden.float(), weight.float())


def _map_hf_name(hf_name: str, config: ModelConfig) -> tuple[str, int | None] | None:
    """HF tensor name -> (our parameter name, row offset inside a fused parameter or None)."""
    name = hf_name.removeprefix("model.")
    if name.endswith("rotary_emb.inv_freq"):
        return None
    if name == "lm_head.weight" and config.tie_word_embeddings:
        return None
    q, kv, inter = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim, config.intermediate_size
    fused = {
        "self_attn.q_proj": ("self_attn.qkv_proj", 0),
        "self_attn.k_proj": ("self_attn.qkv_proj", q),
        "self_attn.v_proj": ("self_attn.qkv_proj", q + kv),
        "mlp.gate_proj": ("mlp.gate_up_proj", 0),
        "mlp.up_proj": ("mlp.gate_up_proj", inter),
    }
    for hf_part, (ours, offset) in fused.items():
        if f".{hf_part}." in name:
            return name.replace(hf_part, ours), offset
    return name, None


def _expected_loads(model: LlamaForCausalLM) -> set[str]:
    c = model.config
    q, kv, inter = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
    expected = set()
    for name, _ in model.named_parameters():
        if name.endswith("qkv_proj.weight") or name.endswith("qkv_proj.bias"):
            expected |= {f"{name}@0", f"{name}@{q}", f"{name}@{q + kv}"}
        elif name.endswith("gate_up_proj.weight"):
            expected |= {f"{name}@0", f"{name}@{inter}"}
        else:
            expected.add(name)
    return expected
