"""Plain-torch references of the fused elementwise ops of a Llama decoder layer.

Each function has exactly the semantics (shapes, dtypes, rounding order, what it mutates) of its
Triton kernel, so the parity tests compare like with like; the Triton versions differ only in the
order of fp32 reductions and in fp32 transcendental approximations. They run on any device and
are the CPU path of the dispatcher in this package.

Rounding, for all four: math in fp32 on the upcast inputs, one rounding to the storage dtype at
each point named below.
"""

from __future__ import annotations

import torch


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float,
                       out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """RMSNorm of each row of x [T, H] (any float dtype) with weight [H]. Returns a new tensor
    in out_dtype (default x's dtype); nothing is mutated. Below, "x.dtype" means out_dtype.

    Rounding (Hugging Face Llama's order): n = x_f32 * rsqrt(mean(x_f32^2) + eps) in fp32, n is
    rounded to x.dtype, then out = round_to_x_dtype(float(weight) * float(n)) -- the product taken
    in fp32 and rounded once. When weight.dtype == x.dtype (bf16/fp16/fp32) the fp32 product of two
    such values is exact, so this equals HF's `weight * n.to(x.dtype)` bit for bit. With an fp32
    weight and half activations HF would return fp32; this returns x.dtype."""
    out_dtype = out_dtype or x.dtype
    xf = x.float()
    n = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(out_dtype)
    return (weight.float() * n.float()).to(out_dtype)


def fused_add_rms_norm_reference(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                                 eps: float, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """residual += x in place (fp32 sum rounded once to residual's dtype, as torch's own add),
    then returns rms_norm_reference(residual, weight, eps, out_dtype): a new tensor in out_dtype
    (default residual's dtype). Mutates `residual` [T, H]; x [T, H] is only read."""
    residual.copy_((residual.float() + x.float()).to(residual.dtype))
    return rms_norm_reference(residual, weight, eps, out_dtype)


def silu_and_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [T, 2I] holds gate in its first I columns and up in the next I. Returns a new
    [T, I] tensor in gate_up's dtype: silu(gate) * up computed in fp32 and rounded once.
    (The engine's current `F.silu(gate) * up` rounds twice in half precision; see the tests for
    the difference.)"""
    gate, up = gate_up.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(gate_up.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D] rotated Hugging Face style (non-interleaved halves): x*cos +
    rotate_half(x)*sin, rotate_half(x) = cat(-x[D/2:], x[:D/2]); cos/sin [T, 1, D] fp32. Computed
    in fp32, returned as a new tensor rounded once to x's dtype."""
    xf = x.float()
    half = x.shape[-1] // 2
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def rope_and_write_kv_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                                cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                                v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of q and k for their positions, and the step's K/V written to the cache.

    q [T, Hq, D], k and v [T, Hkv, D] (any strides, e.g. views of one fused qkv tensor);
    positions [T] integer; cos/sin fp32 [max_positions, D] (engine/model/rope.py's tables);
    caches [num_blocks, block_size, Hkv, D]; slot_mapping [T] integer, slot = block * block_size +
    offset, negative = padding row (nothing written). Every position, padding rows' included,
    must index the tables.

    Mutates: q in place (rotated, fp32 math rounded once to q's dtype); k_cache and v_cache at the
    non-negative slots (rotated k rounded to k's dtype, then stored in the cache's dtype; v as is).
    k and v themselves are not modified. Returns q. Slots must be distinct. Selecting the
    non-negative slots synchronizes a CUDA device (boolean indexing), so unlike the Triton kernel
    this reference cannot be captured in a CUDA graph."""
    c = cos[positions][:, None, :].float()
    s = sin[positions][:, None, :].float()
    q.copy_(rotate(q, c, s))
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    block_size = k_cache.shape[1]
    blocks, offsets = slots // block_size, slots % block_size
    # Indexing by (block, offset) rather than a flattened view keeps any cache strides writable.
    k_cache[blocks, offsets] = rotate(k, c, s)[keep].to(k_cache.dtype)
    v_cache[blocks, offsets] = v[keep].to(v_cache.dtype)
    return q
