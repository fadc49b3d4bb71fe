"""Decode attention over the paged KV cache: one query token per sequence, split-K.

Grid (num_decodes, kv_heads, num_splits). A program owns one sequence, one KV head and one
partition of that sequence's context. It reads each K/V tile once and applies it to all the query
heads that share the KV head (GQA), stacked as the rows of one tensor-core tile padded to 16 rows,
the smallest the instructions take: decode is bound by reading K/V, so the idle rows cost little.

When the batch alone gives the GPU too few programs (small batch, long contexts), the context is
cut into partitions (flash-decoding): each program writes its unnormalized output with its running
max and sum, and a small second kernel merges the partitions of every (sequence, head).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl

from adaptive_sarathi.kernels.attention.triton_common import LOG2E, attend_tile, dot_precision

# A partition shorter than this gains little on the GPU (measured on an H100: 512 keys in one
# program or two took the same time) while the merge costs a second launch.
MIN_PARTITION = 512  # tokens
# Two programs per SM, each streaming 32 KB K/V tiles, keep far more bytes in flight than HBM
# latency needs; the sm_90 build (168 registers, 74 KB shared memory at head dim 128 in bf16) fits
# two or three per SM, so the split grid runs in one wave.
TARGET_PROGRAMS_PER_SM = 2
# Bounds the partial-result buffers and the merge's work for very long contexts.
MAX_SPLITS = 64
# Partitions merged per step of the merge kernel's loop.
MERGE_TILE = 16


@dataclass(frozen=True)
class DecodeConfig:
    """Tile shape and launch settings of the decode kernel."""

    block_n: int  # key positions per tile; a power of two >= 16
    num_warps: int
    num_stages: int


def decode_config(head_dim: int, dtype: torch.dtype) -> DecodeConfig:
    """Default tile for `head_dim` and cache `dtype`: K and V tiles of up to 32 KB each, the most
    bytes in flight per program. On an H100 at head dim 128 in bf16, 128 positions per tile read
    K/V at the copy floor where 64 reached 85% of it. fp32 (a correctness path whose three-pass
    tf32 products need more registers) gets half the bytes, to stay clear of spills."""
    tile_bytes = 32768 if dtype.itemsize <= 2 else 16384
    block_n = max(16, min(128, tile_bytes // (head_dim * dtype.itemsize)))
    return DecodeConfig(block_n=block_n, num_warps=4, num_stages=3 if block_n >= 64 else 2)


@lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # the CPU interpreter runs programs one at a time
    return torch.cuda.get_device_properties(device).multi_processor_count


def split_count(num_decodes: int, kv_heads: int, max_context_len: int, num_sms: int) -> int:
    """Split-K partitions per sequence: 1 (no split) unless the batch gives under
    TARGET_PROGRAMS_PER_SM programs per SM; then as many as fit in that target (rounding down, so
    the grid stays one wave), none under MIN_PARTITION tokens and at most MAX_SPLITS."""
    programs = num_decodes * kv_heads
    target = TARGET_PROGRAMS_PER_SM * num_sms
    return max(1, min(target // programs, max_context_len // MIN_PARTITION, MAX_SPLITS))


def split_partition(num_decodes: int, kv_heads: int, max_context_len: int, block_n: int, num_sms: int) -> int:
    """Tokens per split-K partition for split_count's number of splits, a multiple of block_n."""
    splits = split_count(num_decodes, kv_heads, max_context_len, num_sms)
    return triton.cdiv(triton.cdiv(max_context_len, splits), block_n) * block_n


def graph_num_splits(num_decodes: int, kv_heads: int, max_context_len: int, device: torch.device) -> int:
    """The num_splits a CUDA graph of `num_decodes` decodes should capture when contexts may reach
    max_context_len (see decode_attention)."""
    return split_count(num_decodes, kv_heads, max_context_len, _num_sms(device))


# Arguments that vary from step to step are not specialized on: Triton compiles separate kernels
# for values of 1 and multiples of 16, which compiled new variants mid-serving, a second or more each.
@triton.jit(do_not_specialize=["partition", "stride_bt"])
def _decode_kernel(q, k_cache, v_cache, block_tables, context_lens, out, scratch, qk_scale, partition,
                   stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_bt, stride_ot, stride_oh,
                   GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
                   PER_SEQUENCE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens + seq)
    if context_len == 0:  # a padding row of a CUDA graph's mixed step: no sequence, nothing to write
        return
    if PER_SEQUENCE:
        partition = _own_partition(context_len, tl.num_programs(2), BLOCK_N)
    start = split * partition
    end = tl.minimum(start + partition, context_len)  # empty when the sequence ends before start
    full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + offs_g
    head_ok = offs_g < GROUP
    q_tile = tl.load(q + seq.to(tl.int64) * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                     mask=head_ok[:, None], other=0.0)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    table_row = block_tables + seq.to(tl.int64) * stride_bt

    # Whole tiles need no masks; only the last tile of a sequence is partial.
    for n0 in range(start, full_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        acc, m_i, l_i = attend_tile(acc, m_i, l_i, q_tile, k_cache, v_cache, table_row, offs_n, offs_d, kv_head,
                                    None, None, qk_scale, stride_kb, stride_ks, stride_kh,
                                    BLOCK_SIZE, False, DOT_PRECISION)
    for n0 in range(full_end, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid = offs_n < end
        acc, m_i, l_i = attend_tile(acc, m_i, l_i, q_tile, k_cache, v_cache, table_row, offs_n, offs_d, kv_head,
                                    valid[None, :], valid, qk_scale, stride_kb, stride_ks, stride_kh,
                                    BLOCK_SIZE, True, DOT_PRECISION)

    if SPLIT:
        # scratch holds, per (sequence, head, split): HEAD_DIM unnormalized outputs, then after all
        # of those the running maxes, then the running sums.
        num_heads = tl.num_programs(1) * GROUP
        num_splits = tl.num_programs(2)
        num_parts = tl.num_programs(0).to(tl.int64) * num_heads * num_splits
        part = (seq.to(tl.int64) * num_heads + heads) * num_splits + split
        tl.store(scratch + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=head_ok[:, None])
        tl.store(scratch + num_parts * HEAD_DIM + part, m_i, mask=head_ok)
        tl.store(scratch + num_parts * (HEAD_DIM + 1) + part, l_i, mask=head_ok)
    else:
        o = acc / l_i[:, None]
        tl.store(out + seq.to(tl.int64) * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
                 o.to(out.dtype.element_ty), mask=head_ok[:, None])


@triton.jit
def _own_partition(context_len, num_splits, BLOCK_N: tl.constexpr):
    # A sequence's context cut into num_splits tile-aligned parts, so short sequences do not run
    # the longest one's partition size.
    return tl.cdiv(tl.cdiv(context_len, num_splits), BLOCK_N) * BLOCK_N


@triton.jit(do_not_specialize=["partition", "num_splits"])
def _merge_kernel(out, scratch, context_lens, partition, num_splits, stride_ot, stride_oh,
                  HEAD_DIM: tl.constexpr, MERGE_TILE: tl.constexpr, BLOCK_N: tl.constexpr,
                  PER_SEQUENCE: tl.constexpr):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    num_heads = tl.num_programs(1)
    num_parts = tl.num_programs(0).to(tl.int64) * num_heads * num_splits
    part_max = scratch + num_parts * HEAD_DIM
    part_sum = scratch + num_parts * (HEAD_DIM + 1)
    context_len = tl.load(context_lens + seq)
    if context_len == 0:
        return
    if PER_SEQUENCE:
        partition = _own_partition(context_len, num_splits, BLOCK_N)
    used = tl.cdiv(context_len, partition)  # partitions this sequence filled
    base = (seq.to(tl.int64) * num_heads + head) * num_splits
    offs_s = tl.arange(0, MERGE_TILE)
    offs_d = tl.arange(0, HEAD_DIM)

    m_run = tl.full([MERGE_TILE], float("-inf"), dtype=tl.float32)
    for s0 in range(0, used, MERGE_TILE):
        m_run = tl.maximum(m_run, tl.load(part_max + base + s0 + offs_s, mask=s0 + offs_s < used,
                                          other=float("-inf")))
    m_max = tl.max(m_run, 0)

    l_run = tl.zeros([MERGE_TILE], dtype=tl.float32)
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for s0 in range(0, used, MERGE_TILE):
        ok = s0 + offs_s < used
        m = tl.load(part_max + base + s0 + offs_s, mask=ok, other=float("-inf"))
        w = tl.exp2(m - m_max)  # 0 for the masked-off partitions
        l_run += w * tl.load(part_sum + base + s0 + offs_s, mask=ok, other=0.0)
        o = tl.load(scratch + (base + s0 + offs_s)[:, None] * HEAD_DIM + offs_d[None, :], mask=ok[:, None],
                    other=0.0)
        acc += tl.sum(o * w[:, None], 0)
    o = acc / tl.sum(l_run, 0)
    tl.store(out + seq.to(tl.int64) * stride_ot + head * stride_oh + offs_d, o.to(out.dtype.element_ty))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                     context_lens: torch.Tensor, max_context_len: int, scale: float, out: torch.Tensor,
                     partition: int | None = None, config: DecodeConfig | None = None,
                     num_splits: int | None = None) -> None:
    """Attention of one query token per sequence, rows [0, B) of q [>= B, heads, D], over its whole
    cached context; B = len(context_lens).

    block_tables int32 [B, >= blocks of the longest context]; context_lens int32 [B] (each counting
    the query token, whose K/V must already be in the cache; 0 marks a row to skip, whose output is
    left untouched); max_context_len their max.
    The caches must share one layout. Writes rows [0, B) of out (same shape as q, any strides with a
    contiguous last dim) and nothing else; allocates only the split-K scratch. partition (tokens, a
    multiple of the tile) overrides the split policy; config the tile.

    num_splits instead cuts every sequence's own context into that many tile-aligned partitions,
    read on the device: the launch then depends on nothing but B and num_splits, which is what a
    CUDA graph replayed for changing contexts needs (max_context_len is ignored)."""
    num_decodes, (num_heads, head_dim) = context_lens.shape[0], q.shape[1:]
    if num_decodes == 0:
        return
    kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_heads // kv_heads
    config = config or decode_config(head_dim, k_cache.dtype)
    per_sequence = num_splits is not None
    if per_sequence:
        if num_splits < 1:
            raise ValueError(f"num_splits={num_splits} is invalid: use an integer >= 1")
        partition = 0  # each program computes its sequence's own
    else:
        if partition is None:
            partition = split_partition(num_decodes, kv_heads, max_context_len, config.block_n,
                                        _num_sms(q.device))
        if partition % config.block_n:
            raise ValueError(f"partition={partition} must be a multiple of the tile's {config.block_n} positions")
        num_splits = triton.cdiv(max_context_len, partition)
    split = num_splits > 1
    # One allocation for the split partials (outputs, maxes, sums); unused without a split.
    scratch = torch.empty(num_decodes * num_heads * num_splits * (head_dim + 2) if split else 0,
                          dtype=torch.float32, device=q.device)
    _decode_kernel[(num_decodes, kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, scratch, scale * LOG2E, partition,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, BLOCK_N=config.block_n, SPLIT=split, PER_SEQUENCE=per_sequence,
        DOT_PRECISION=dot_precision(k_cache.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if split:
        _merge_kernel[(num_decodes, num_heads)](
            out, scratch, context_lens, partition, num_splits, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, MERGE_TILE=MERGE_TILE, BLOCK_N=config.block_n, PER_SEQUENCE=per_sequence,
            num_warps=4,
        )
