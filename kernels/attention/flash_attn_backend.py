"""The flash-attn backend: a thin adapter over flash-attn 2's variable-length kernel reading the
paged KV cache through block tables.

UNTESTED: flash-attn could not be installed where this adapter was written. It follows the
documented API of flash-attn >= 2.6, `flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k,
max_seqlen_q, max_seqlen_k, softmax_scale=..., causal=True, block_table=...)`, where k/v are the
paged caches [num_blocks, block_size, kv_heads, head_dim], block_table is int32 [batch, max_blocks]
and flash-attn 2 requires block_size to be a multiple of 256. Run
tests/kernels/test_flash_attn_backend.py on a machine that has flash-attn before relying on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptive_sarathi.kernels.attention.metadata import AttentionMetadata


def flash_attn_paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """Same contract as paged_attention_reference: the caches already hold this step's K/V;
    returns a new [T, heads, head_dim] tensor. Raises ValueError when block_size is not a multiple
    of 256 or the prefill rows are not packed after the decodes in span order."""
    from flash_attn import flash_attn_varlen_func

    if meta.block_size % 256:
        raise ValueError(f"attention_backend='flash_attn' needs block_size to be a multiple of 256 (flash-attn 2's "
                         f"paged kernel), got {meta.block_size}: use block_size=256 or attention_backend='triton'")
    nd = meta.num_decode_tokens
    row = nd
    for span in meta.prefills:
        if span.q_start != row:
            raise ValueError(f"prefill rows must follow the decodes in span order; a span starts at row "
                             f"{span.q_start}, expected {row}")
        row = span.q_end
    # Every decode is a sequence of one query row. With causal=True flash-attn aligns the mask to
    # the bottom right: of n query rows over L keys, row i sees keys 0..L-n+i, which is exactly
    # start_position + i, so decodes and chunks after a cached prefix share one call.
    device = q.device
    q_lens = [torch.ones(nd, dtype=torch.int32, device=device)]
    k_lens = [meta.decode_context_lens]
    tables = [meta.decode_block_tables]
    max_q, max_k = 1, meta.max_decode_context_len
    layout = meta.prefill_layout
    if layout is not None:
        q_lens.append(layout.q_lens)
        k_lens.append(layout.start_positions + layout.q_lens)
        tables.append(layout.block_tables)
        max_q, max_k = max(max_q, layout.max_q_len), max(max_k, layout.max_context_len)
    width = max(t.shape[1] for t in tables)
    block_table = torch.cat([F.pad(t, (0, width - t.shape[1])) for t in tables]).to(torch.int32)
    cu_q = F.pad(torch.cat(q_lens).cumsum(0), (1, 0)).to(torch.int32)
    cu_k = F.pad(torch.cat(k_lens).cumsum(0), (1, 0)).to(torch.int32)
    return flash_attn_varlen_func(q, k_cache, v_cache, cu_q, cu_k, max_q, max_k, softmax_scale=scale, causal=True,
                                  block_table=block_table)
