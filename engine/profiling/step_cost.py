"""The least work one step must do: bytes through device memory and matmul FLOPs, per step shape.

The two halves of a roofline for measured steps. Bytes: every weight read once (the embedding
table only for the step's rows, unless tied to the LM head) plus every attended KV entry read
once and each new token's KV written once. FLOPs: 2 x matmul parameters x tokens, the LM head on
the sampling rows, and attention (QK^T and PV: 4 x head_dim FLOPs per head, layer and attended
position of each query row). Activations are left out: they are small next to weights and KV.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptive_sarathi.engine.model.config import ModelConfig
from adaptive_sarathi.engine.profiling.profile_shapes import ProfileShape


@dataclass(frozen=True)
class StepCost:
    bytes: float  # through device memory, read + written
    flops: float  # matmul and attention floating-point operations

    def floor_s(self, bandwidth: float, matmul_flops: float) -> float:
        """The larger of the memory time and the compute time, given bytes/s and FLOP/s."""
        return max(self.bytes / bandwidth, self.flops / matmul_flops)


def layer_matmul_params(c: ModelConfig) -> int:
    """Weights of one decoder layer's projections (QKV, output, gate/up, down)."""
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    return c.hidden_size * (q + 2 * kv) + q * c.hidden_size + 3 * c.hidden_size * c.intermediate_size


def weight_bytes(c: ModelConfig, dtype_bytes: int) -> int:
    """Weight bytes one step reads: all but an untied input-embedding table."""
    untied_embedding = 0 if c.tie_word_embeddings else c.vocab_size * c.hidden_size
    return (c.num_params - untied_embedding) * dtype_bytes


def kv_bytes_per_token(c: ModelConfig, dtype_bytes: int) -> int:
    return 2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype_bytes


def step_cost(c: ModelConfig, shape: ProfileShape, dtype_bytes: int) -> StepCost:
    """Bytes and FLOPs of `shape` on model `c` in a dtype of `dtype_bytes` bytes; every sequence
    samples (one LM-head row each), as in synthetic batches."""
    seqs = shape.num_decodes + len(shape.prefill_chunks)
    attended_contexts = shape.num_decodes * shape.decode_context_len + sum(
        n + prefix for n, prefix in shape.prefill_chunks)
    kv = kv_bytes_per_token(c, dtype_bytes) * (attended_contexts + shape.num_tokens)
    # A chunk's row i (0-based) after a prefix p attends p + i + 1 positions.
    attended_by_rows = shape.num_decodes * shape.decode_context_len + sum(
        n * prefix + n * (n + 1) // 2 for n, prefix in shape.prefill_chunks)
    flops = (2.0 * c.num_layers * layer_matmul_params(c) * shape.num_tokens
             + 2.0 * c.vocab_size * c.hidden_size * seqs
             + 4.0 * c.num_layers * c.num_heads * c.head_dim * attended_by_rows)
    return StepCost(bytes=float(weight_bytes(c, dtype_bytes) + kv), flops=flops)
