"""Rotary embedding of q and k plus the paged KV-cache write, as one Triton launch. Importing this
module imports triton.

One program per token: it gathers its position's cos/sin row once (fp32, L2-resident), rotates
its q heads in place, then rotates its k heads and stores them and its v heads straight into the
cache slot, so rotated k never makes a round trip through HBM. Heads are processed as a
[HEAD_BLOCK, D/2] tile per half of the head dim (the rotation pairs element i with i + D/2);
head counts are compile-time constants (one compile per model), so the head loops unroll and
need no run-time bounds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NUM_WARPS = 4
TILE_ELEMENTS = 4096  # heads * head_dim per tile: 32 fp32 values of each operand per thread


@triton.jit
def _rotate_half_tile(ptr, cos_lo, cos_hi, sin_lo, sin_hi, mask, HALF: tl.constexpr):
    """Loads the two halves at ptr (a [heads, HALF] tile of pointers to the low half) and returns
    them rotated in fp32: lo*cos - hi*sin, hi*cos + lo*sin."""
    lo = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    hi = tl.load(ptr + HALF, mask=mask, other=0.0).to(tl.float32)
    return lo * cos_lo - hi * sin_lo, hi * cos_hi + lo * sin_hi


@triton.jit
def _rope_kv_kernel(q_ptr, k_ptr, v_ptr, positions_ptr, cos_ptr, sin_ptr, k_cache_ptr, v_cache_ptr, slots_ptr,
                    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_cos, stride_sin,
                    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch, block_size,
                    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr,
                    Q_HEAD_BLOCK: tl.constexpr, KV_HEAD_BLOCK: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token).to(tl.int64)
    d = tl.arange(0, HALF)
    # Both halves of the tables are read, not assumed equal, so any [max_pos, D] table works.
    cos_lo = tl.load(cos_ptr + position * stride_cos + d)[None, :]
    cos_hi = tl.load(cos_ptr + position * stride_cos + HALF + d)[None, :]
    sin_lo = tl.load(sin_ptr + position * stride_sin + d)[None, :]
    sin_hi = tl.load(sin_ptr + position * stride_sin + HALF + d)[None, :]

    for h0 in tl.static_range(0, NUM_Q_HEADS, Q_HEAD_BLOCK):
        heads = h0 + tl.arange(0, Q_HEAD_BLOCK)
        mask = (heads < NUM_Q_HEADS)[:, None]
        ptr = q_ptr + token * stride_qt + heads[:, None].to(tl.int64) * stride_qh + d[None, :]
        lo, hi = _rotate_half_tile(ptr, cos_lo, cos_hi, sin_lo, sin_hi, mask, HALF)
        tl.store(ptr, lo.to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(ptr + HALF, hi.to(q_ptr.dtype.element_ty), mask=mask)

    slot = tl.load(slots_ptr + token).to(tl.int64)
    write = slot >= 0  # padding rows carry slot -1: rotate their q, write nothing to the cache
    safe_slot = tl.maximum(slot, 0)
    block = safe_slot // block_size
    offset = safe_slot % block_size
    k_dst = k_cache_ptr + block * stride_kcb + offset * stride_kcs
    v_dst = v_cache_ptr + block * stride_vcb + offset * stride_vcs
    for h0 in tl.static_range(0, NUM_KV_HEADS, KV_HEAD_BLOCK):
        heads = h0 + tl.arange(0, KV_HEAD_BLOCK)
        valid = (heads < NUM_KV_HEADS)[:, None]
        mask = valid & write
        h64 = heads[:, None].to(tl.int64)
        lo, hi = _rotate_half_tile(k_ptr + token * stride_kt + h64 * stride_kh + d[None, :],
                                   cos_lo, cos_hi, sin_lo, sin_hi, valid & write, HALF)
        # Rounded to k's dtype first (what an unfused rotate then cache write stores), then to the cache's.
        dst = k_dst + h64 * stride_kch + d[None, :]
        tl.store(dst, lo.to(k_ptr.dtype.element_ty).to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + HALF, hi.to(k_ptr.dtype.element_ty).to(k_cache_ptr.dtype.element_ty), mask=mask)
        src = v_ptr + token * stride_vt + h64 * stride_vh + d[None, :]
        dst = v_dst + h64 * stride_vch + d[None, :]
        tl.store(dst, tl.load(src, mask=mask).to(v_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + HALF, tl.load(src + HALF, mask=mask).to(v_cache_ptr.dtype.element_ty), mask=mask)


def supports(head_dim: int) -> bool:
    """Whether the kernel takes this head dim (a power of two from 8 to 256)."""
    return 8 <= head_dim <= 256 and head_dim & (head_dim - 1) == 0


def _head_block(heads: int, head_dim: int) -> int:
    return min(triton.next_power_of_2(heads), max(1, TILE_ELEMENTS // head_dim))


def rope_and_write_kv_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                             cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                             slot_mapping: torch.Tensor) -> torch.Tensor:
    """Same contract as reference.rope_and_write_kv_reference: rotates q [T, Hq, D] in place
    (any token/head strides, last dim contiguous: a view into the fused qkv buffer is fine), writes
    rotated k and v into the caches at the non-negative slots, leaves k and v unmodified, returns
    q. Raises ValueError for shapes, dtypes or layouts the kernel does not take."""
    _check(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping)
    t, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if t == 0:
        return q
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    _rope_kv_kernel[(t,)](
        q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos.stride(0), sin.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
        v_cache.stride(2), k_cache.shape[1],
        NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=num_kv_heads, HALF=head_dim // 2,
        Q_HEAD_BLOCK=_head_block(num_q_heads, head_dim), KV_HEAD_BLOCK=_head_block(num_kv_heads, head_dim),
        num_warps=NUM_WARPS)
    return q


def _check(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping) -> None:
    if q.dim() != 3 or k.dim() != 3 or k.shape != v.shape or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"expected q [T, Hq, D], k and v [T, Hkv, D], caches [blocks, block_size, Hkv, D], got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, k_cache "
                         f"{tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)}")
    t, _, head_dim = q.shape
    if k.shape[0] != t or k.shape[2] != head_dim or k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and caches {tuple(k_cache.shape)} disagree on "
                         f"tokens, kv heads or head_dim")
    if positions.shape != (t,) or slot_mapping.shape != (t,):
        raise ValueError(f"positions and slot_mapping must be [T={t}], got {tuple(positions.shape)} and "
                         f"{tuple(slot_mapping.shape)}")
    if cos.dim() != 2 or cos.shape != sin.shape or cos.shape[1] != head_dim or cos.dtype != torch.float32 \
            or sin.dtype != torch.float32:
        raise ValueError(f"cos and sin must be float32 [max_positions, head_dim={head_dim}], got "
                         f"{tuple(cos.shape)} {cos.dtype} and {tuple(sin.shape)} {sin.dtype}")
    if not supports(head_dim):
        raise ValueError(f"head_dim={head_dim} is not supported by the triton rope kernel: use a power of two "
                         f"from 8 to 256, or impl='torch'")
    for name, x in (("q", q), ("cos", cos), ("sin", sin), ("k_cache", k_cache), ("v_cache", v_cache)):
        if x.stride(-1) != 1:
            raise ValueError(f"{name} must have a contiguous last dim, got strides {tuple(x.stride())}")
