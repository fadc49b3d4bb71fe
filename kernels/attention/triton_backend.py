"""The Triton attention backend: a mixed prefill+decode step in two launches (more when the
decodes or the prefill chunks are split), decodes first. Importing this module imports triton.

Prefill chunks run triton_prefill's kernel, or the device-split one of triton_prefill_split where
its DEVICE_SPLIT_MIN_CONTEXT says so."""

from __future__ import annotations

import torch

from adaptive_sarathi.kernels.attention.metadata import AttentionMetadata
from adaptive_sarathi.kernels.attention.triton_decode import decode_attention
from adaptive_sarathi.kernels.attention.triton_prefill import prefill_attention
from adaptive_sarathi.kernels.attention.triton_prefill_split import prefill_attention_device_split, uses_device_split

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                           scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of q [T, heads, head_dim] against the caches [num_blocks, block_size, kv_heads,
    head_dim], which must already hold this step's keys/values; same contract as
    paged_attention_reference. Writes every row of `out` (a new [T, heads, head_dim] tensor in q's
    dtype when None) and returns it; inputs are not modified. On first use builds and caches
    meta.prefill_layout. Raises ValueError for shapes or dtypes the kernels do not take."""
    _check(q, k_cache, v_cache, meta)
    if q.stride(-1) != 1:
        q = q.contiguous()
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must match q's shape {tuple(q.shape)} and dtype {q.dtype} with a contiguous last dim, "
                         f"got {tuple(out.shape)} {out.dtype} strides {out.stride()}")
    if meta.num_decode_tokens:
        decode_attention(q, k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens,
                         meta.max_decode_context_len, scale, out, num_splits=meta.decode_num_splits)
    layout = meta.prefill_layout
    if layout is not None:
        if uses_device_split(layout):
            prefill_attention_device_split(q, k_cache, v_cache, layout, scale, out)
        else:
            prefill_attention(q, k_cache, v_cache, layout, scale, out)
    return out


def _check(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata) -> None:
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"expected q [T, heads, head_dim] and caches [blocks, block_size, kv_heads, head_dim], "
                         f"got q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)}")
    head_dim, kv_heads, block_size = q.shape[2], k_cache.shape[2], k_cache.shape[1]
    if k_cache.shape[3] != head_dim or q.shape[1] % kv_heads:
        raise ValueError(f"q {tuple(q.shape)} does not fit caches {tuple(k_cache.shape)}: head_dim must match "
                         f"and heads must be a multiple of kv_heads")
    if head_dim not in (16, 32, 64, 128, 256):
        raise ValueError(f"head_dim={head_dim} is not supported by the triton backend: use a power of two "
                         f"from 16 to 256, or attention_backend='torch'")
    if block_size != meta.block_size or block_size & (block_size - 1):
        raise ValueError(f"cache block_size={block_size} (metadata says {meta.block_size}) must be a power of two "
                         f"and match the metadata")
    if q.dtype not in SUPPORTED_DTYPES or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q and caches must share one dtype of {SUPPORTED_DTYPES}, got q {q.dtype}, "
                         f"k_cache {k_cache.dtype}, v_cache {v_cache.dtype}")
    if k_cache.stride(-1) != 1 or k_cache.stride() != v_cache.stride():
        raise ValueError(f"the caches need one layout with a contiguous head_dim, got strides {k_cache.stride()} "
                         f"and {v_cache.stride()}")
