"""Plain-torch attention over a paged KV cache for mixed prefill+decode steps.

The reference every other backend is checked against, and the CPU backend. Decodes are batched
into one masked attention call; each prefill chunk is one causal call over its cached prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptive_sarathi.kernels.attention.metadata import AttentionMetadata


def write_kv_cache(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    """Store this step's keys/values [T, kv_heads, head_dim] into the caches
    [num_blocks, block_size, kv_heads, head_dim] at slot_mapping. Mutates the caches in place."""
    num_blocks, block_size = k_cache.shape[:2]
    k_cache.view(num_blocks * block_size, *k_cache.shape[2:])[slot_mapping] = k
    v_cache.view(num_blocks * block_size, *v_cache.shape[2:])[slot_mapping] = v


def gather_context(cache: torch.Tensor, block_table: torch.Tensor, context_len: int) -> torch.Tensor:
    """Positions [0, context_len) of one sequence: [context_len, kv_heads, head_dim] (a copy)."""
    block_size = cache.shape[1]
    num_blocks = -(-context_len // block_size)
    return cache[block_table[:num_blocks]].flatten(0, 1)[:context_len]


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """Attention of q [T, heads, head_dim] against the caches, which must already hold this step's
    keys/values. Returns a new tensor [T, heads, head_dim]; inputs are not modified."""
    out = torch.empty_like(q)
    nd = meta.num_decode_tokens
    if nd:
        out[:nd] = _decode_attention(q[:nd], k_cache, v_cache, meta, scale)
    for span in meta.prefills:
        ctx = span.context_len
        k = gather_context(k_cache, span.block_table, ctx).transpose(0, 1)  # [kvh, ctx, d]
        v = gather_context(v_cache, span.block_table, ctx).transpose(0, 1)
        qs = q[span.q_start:span.q_end].transpose(0, 1)  # [h, n, d]
        n = span.q_end - span.q_start
        # Row i sits at position start+i and sees keys 0..start+i.
        rows = torch.arange(n, device=q.device)[:, None] + span.start_position
        mask = torch.arange(ctx, device=q.device)[None, :] <= rows
        o = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask, scale=scale,
                                           enable_gqa=qs.shape[0] != k.shape[0])
        out[span.q_start:span.q_end] = o.transpose(0, 1)
    return out


def _decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      meta: AttentionMetadata, scale: float) -> torch.Tensor:
    block_size = k_cache.shape[1]
    max_blocks = -(-meta.max_decode_context_len // block_size)
    tables = meta.decode_block_tables[:, :max_blocks]
    b = q.shape[0]
    k = k_cache[tables].flatten(1, 2).transpose(1, 2)  # [b, kvh, L, d]
    v = v_cache[tables].flatten(1, 2).transpose(1, 2)
    positions = torch.arange(k.shape[2], device=q.device)
    mask = (positions[None, :] < meta.decode_context_lens[:, None].to(positions.dtype))[:, None, None, :]
    o = F.scaled_dot_product_attention(q.view(b, q.shape[1], 1, q.shape[2]), k, v, attn_mask=mask,
                                       scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return o.view(b, q.shape[1], q.shape[2])
