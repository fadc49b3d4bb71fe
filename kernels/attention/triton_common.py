"""Triton building blocks shared by the paged decode and prefill kernels.

Both kernels walk a sequence's keys in tiles of BLOCK_N positions. A tile may span several cache
blocks (or part of one), so each position looks up its own block in the block table; the table
row is a few hundred bytes and stays in L1, while every K/V row read is HEAD_DIM contiguous
elements, which keeps the loads coalesced and 16 bytes wide.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adaptive_sarathi.kernels.attention.triton_interpreter import fix_scalar_index, interpreting

if interpreting():
    fix_scalar_index()

# Folding log2(e) into the softmax scale lets the kernels use exp2, which maps to one hardware
# instruction, instead of exp.
LOG2E = 1.4426950408889634


def dot_precision(dtype: torch.dtype) -> str:
    """The tl.dot input precision for caches of `dtype`. fp32 takes three tf32 passes, about fp32
    accurate (like torch's default matmul) yet on the tensor cores, where plain fp32 products
    spill registers at these tiles; other dtypes ignore the setting."""
    return "tf32x3" if dtype == torch.float32 else "tf32"


@triton.jit
def attend_tile(acc, m_i, l_i, q, k_cache, v_cache, block_table_row, offs_n, offs_d, kv_head,
                visible, valid, qk_scale, stride_block, stride_slot, stride_head,
                BLOCK_SIZE: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One online-softmax step of the query rows `q` [M, D] over key positions `offs_n` [N].

    acc [M, D], m_i [M] (running max, log2 domain), l_i [M] (running sum) are fp32 and returned
    updated. K and V caches share one layout (the strides). Unless MASKED, every position must exist
    and be visible to every row (`visible` and `valid` are then ignored). When MASKED, `valid` [N]
    says which positions exist (the others are not read) and `visible` [M, N] which (row, position)
    pairs may attend. The first tile a row sees must hold at least one visible position, so m_i is
    finite from then on and neither 0/0 nor inf-inf can arise."""
    if MASKED:
        block = tl.load(block_table_row + offs_n // BLOCK_SIZE, mask=valid, other=0)
    else:
        block = tl.load(block_table_row + offs_n // BLOCK_SIZE)
    # int64 before multiplying: block * stride exceeds int32 on caches over 2**31 elements.
    rows = (block.to(tl.int64) * stride_block + (offs_n % BLOCK_SIZE).to(tl.int64) * stride_slot
            + kv_head.to(tl.int64) * stride_head)
    if MASKED:
        k = tl.load(k_cache + rows[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0)
    else:
        k = tl.load(k_cache + rows[:, None] + offs_d[None, :])
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if MASKED:
        s = tl.where(visible, s, float("-inf"))
    if MASKED:
        v = tl.load(v_cache + rows[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0)
    else:
        v = tl.load(v_cache + rows[:, None] + offs_d[None, :])
    return online_softmax(acc, m_i, l_i, s, v, DOT_PRECISION)


@triton.jit
def online_softmax(acc, m_i, l_i, s, v, DOT_PRECISION: tl.constexpr):
    """The running output acc [M, D], max m_i [M] and sum l_i [M] (fp32, log2 domain) after one
    tile of scores s [M, N] (already scaled by qk_scale, -inf where masked) and values v [N, D].
    Every row of s must hold a finite score unless m_i is already finite."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    # P goes to the tensor cores in the cache dtype (the flash-attention trade); the sum stays fp32.
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i
