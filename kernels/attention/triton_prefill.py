"""Prefill-chunk attention over the paged KV cache: every chunk of a step in one launch.

A chunk's query rows sit at positions start_position + i and see keys 0..start_position + i: the
cached prefix, then causally within the chunk. Flash-attention style: a program holds a tile of
BLOCK_M query rows in registers and streams the keys in tiles of BLOCK_N with an online softmax.

GQA by head packing: the rows of a tile are (token, head) pairs of the GROUP query heads that share
one KV head, token-major, so each K/V tile is read once for the whole group and a chunk of n tokens
is n * GROUP rows. Grid (row tiles, kv_heads): the chunks' row tiles laid end to end, each program
finding its chunk from the chunks' lengths on the device, so a CUDA graph can be captured for a
bound on the rows and replayed for any chunks within it (spare programs exit at once). Keys below
the tile's first position are visible to every row and run without masks; only the diagonal band
is masked.

Split-KV (flash-decoding style) for short chunks over long contexts: a chunk of 100 tokens after
a 4k cached prefix is 4 row tiles per KV head, 32 programs for 8 KV heads on a GPU of 132 SMs,
each walking 32 key tiles in turn. Then a third grid axis cuts every tile's shared keys into
`num_splits` tile-aligned partitions (the last also takes the diagonal band); each program writes
its unnormalized rows with their running max and sum, and a second kernel merges them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from adaptive_sarathi.kernels.attention.metadata import PrefillLayout
from adaptive_sarathi.kernels.attention.triton_common import LOG2E, attend_tile, dot_precision
from adaptive_sarathi.kernels.attention.triton_decode import MAX_SPLITS, MIN_PARTITION, TARGET_PROGRAMS_PER_SM, _num_sms


@dataclass(frozen=True)
class PrefillConfig:
    """Tile shape and launch settings of the prefill kernel."""

    block_m: int  # query rows ((token, head) pairs) per program; a power of two >= 16
    block_n: int  # key positions per tile; a power of two >= 16
    num_warps: int
    num_stages: int


def prefill_config(head_dim: int, dtype: torch.dtype) -> PrefillConfig:
    """Default tile for `head_dim` and cache `dtype`, the fastest of a sweep on an H100 (2048-token
    chunks after 0 and 2048 cached tokens, bf16) among tiles the sm_90 build runs without register
    spills or with few: 128 x 64 with 8 warps at head dim 64, 128 x 128 at 128, 64 x 32 with 4
    warps at 256 (twice as fast as with 8). fp32, a correctness path whose three-pass tf32 products
    need more registers, gets small tiles."""
    if dtype == torch.float32:
        return PrefillConfig(block_m=32, block_n=32 if head_dim <= 128 else 16, num_warps=4, num_stages=2)
    if head_dim <= 64:
        return PrefillConfig(block_m=128, block_n=64, num_warps=8, num_stages=3)
    if head_dim <= 128:
        return PrefillConfig(block_m=128, block_n=128, num_warps=8, num_stages=3)
    return PrefillConfig(block_m=64, block_n=32, num_warps=4, num_stages=2)


SPAN_BLOCK = 16  # chunk lengths read per iteration while a program looks for its chunk


def prefill_split_count(num_tiles: int, kv_heads: int, max_context_len: int, num_sms: int) -> int:
    """Split-KV partitions per row tile: 1 (no split) unless the row tiles give under
    TARGET_PROGRAMS_PER_SM programs per SM; then as many as fit in that target (rounding down, so
    the grid stays one wave), none under MIN_PARTITION keys and at most MAX_SPLITS (the decode
    kernel's rules)."""
    target = TARGET_PROGRAMS_PER_SM * num_sms
    return max(1, min(target // (num_tiles * kv_heads), max_context_len // MIN_PARTITION, MAX_SPLITS))


@triton.jit
def _find_chunk(pid, q_lens, num_spans, GROUP: tl.constexpr, BLOCK_M: tl.constexpr, SPAN_BLOCK: tl.constexpr):
    # Row tile `pid` of the chunks' tiles laid end to end: (its chunk, its tile within the chunk);
    # the chunk is num_spans for a spare program. The chunk is the number of chunks whose tiles
    # all lie before pid.
    span = 0
    tiles_before = 0
    offset = 0
    for base in range(0, num_spans, SPAN_BLOCK):
        offs_s = base + tl.arange(0, SPAN_BLOCK)
        in_range = offs_s < num_spans
        span_tiles = (tl.load(q_lens + offs_s, mask=in_range, other=0) * GROUP + BLOCK_M - 1) // BLOCK_M
        before = in_range & (offset + tl.cumsum(span_tiles, 0) <= pid)
        span += tl.sum(before.to(tl.int32), 0)
        tiles_before += tl.sum(tl.where(before, span_tiles, 0), 0)
        offset += tl.sum(span_tiles, 0)
    return span, pid - tiles_before


# num_spans and the block tables' width vary from step to step: specializing on them (Triton
# compiles separate kernels for values of 1 and multiples of 16) compiled new variants mid-serving,
# a second or more each.
@triton.jit(do_not_specialize=["num_spans", "stride_bt", "num_tokens"])
def _prefill_kernel(q, k_cache, v_cache, out, scratch, q_starts, q_lens, start_positions, block_tables, qk_scale,
                    num_spans, num_tokens,
                    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_bt, stride_ot, stride_oh,
                    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPAN_BLOCK: tl.constexpr,
                    SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # Last tiles first: within a chunk they see the most keys, so starting them early shortens the
    # launch's tail (and the spare programs of a padded grid exit first).
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    kv_head = tl.program_id(1)
    span, tile = _find_chunk(pid, q_lens, num_spans, GROUP, BLOCK_M, SPAN_BLOCK)
    if span >= num_spans:
        return
    q_len = tl.load(q_lens + span)
    r0 = tile * BLOCK_M
    q_start = tl.load(q_starts + span)
    start_pos = tl.load(start_positions + span)

    offs_r = r0 + tl.arange(0, BLOCK_M)
    row_ok = offs_r < q_len * GROUP
    t = offs_r // GROUP
    heads = kv_head * GROUP + offs_r % GROUP
    tokens = (q_start + t).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    q_tile = tl.load(q + tokens[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                     mask=row_ok[:, None], other=0.0)
    positions = start_pos + t

    # Keys [0, shared_end) are visible to every row of the tile; [shared_end, kv_end) is the band
    # where rows differ. kv_end stops at the tile's last real row (padding rows are never stored).
    first_t = r0 // GROUP
    last_t = tl.minimum((r0 + BLOCK_M - 1) // GROUP, q_len - 1)
    shared_end = (start_pos + first_t + 1) // BLOCK_N * BLOCK_N
    kv_end = start_pos + last_t + 1
    # This program's part of the shared keys (all of them without a split); the last part also
    # takes the band.
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)
    if SPLIT:
        partition = tl.cdiv(tl.cdiv(shared_end, num_splits), BLOCK_N) * BLOCK_N
        shared_start = tl.minimum(split * partition, shared_end)
        shared_stop = tl.minimum(shared_start + partition, shared_end)
        band_stop = tl.where(split == num_splits - 1, kv_end, shared_end)
    else:
        shared_start = 0
        shared_stop = shared_end
        band_stop = kv_end

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    table_row = block_tables + span.to(tl.int64) * stride_bt
    for n0 in range(shared_start, shared_stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        acc, m_i, l_i = attend_tile(acc, m_i, l_i, q_tile, k_cache, v_cache, table_row, offs_n, offs_d, kv_head,
                                    None, None, qk_scale, stride_kb, stride_ks, stride_kh,
                                    BLOCK_SIZE, False, DOT_PRECISION)
    for n0 in range(shared_end, band_stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid = offs_n < kv_end
        visible = offs_n[None, :] <= positions[:, None]
        acc, m_i, l_i = attend_tile(acc, m_i, l_i, q_tile, k_cache, v_cache, table_row, offs_n, offs_d, kv_head,
                                    visible, valid, qk_scale, stride_kb, stride_ks, stride_kh,
                                    BLOCK_SIZE, True, DOT_PRECISION)

    if SPLIT:
        # scratch holds, per (q row, head, split): HEAD_DIM unnormalized outputs, then after all of
        # those the running maxes, then the running sums. A part with no keys keeps m = -inf.
        num_heads = tl.num_programs(1) * GROUP
        num_parts = num_tokens.to(tl.int64) * num_heads * num_splits
        part = (tokens * num_heads + heads) * num_splits + split
        tl.store(scratch + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=row_ok[:, None])
        tl.store(scratch + num_parts * HEAD_DIM + part, m_i, mask=row_ok)
        tl.store(scratch + num_parts * (HEAD_DIM + 1) + part, l_i, mask=row_ok)
    else:
        o = acc / l_i[:, None]
        tl.store(out + tokens[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
                 o.to(out.dtype.element_ty), mask=row_ok[:, None])


@triton.jit(do_not_specialize=["num_spans", "num_tokens", "num_splits"])
def _prefill_merge_kernel(out, scratch, q_starts, q_lens, num_spans, num_tokens, num_splits, stride_ot, stride_oh,
                          GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                          SPAN_BLOCK: tl.constexpr):
    # The same row tiles as the split kernel; each merges its rows' partitions in one online pass,
    # starting from the last partition, which always holds the row's own position (a finite max).
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    kv_head = tl.program_id(1)
    span, tile = _find_chunk(pid, q_lens, num_spans, GROUP, BLOCK_M, SPAN_BLOCK)
    if span >= num_spans:
        return
    q_len = tl.load(q_lens + span)
    offs_r = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_r < q_len * GROUP
    tokens = (tl.load(q_starts + span) + offs_r // GROUP).to(tl.int64)
    heads = kv_head * GROUP + offs_r % GROUP
    offs_d = tl.arange(0, HEAD_DIM)
    num_heads = tl.num_programs(1) * GROUP
    num_parts = num_tokens.to(tl.int64) * num_heads * num_splits
    base = (tokens * num_heads + heads) * num_splits
    last = base + num_splits - 1
    m_run = tl.load(scratch + num_parts * HEAD_DIM + last, mask=row_ok, other=0.0)
    l_run = tl.load(scratch + num_parts * (HEAD_DIM + 1) + last, mask=row_ok, other=1.0)
    acc = tl.load(scratch + last[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    for s in range(0, num_splits - 1):
        part = base + s
        m = tl.load(scratch + num_parts * HEAD_DIM + part, mask=row_ok, other=float("-inf"))
        m_new = tl.maximum(m_run, m)
        keep = tl.exp2(m_run - m_new)
        w = tl.exp2(m - m_new)  # 0 for a partition without keys
        l_run = l_run * keep + w * tl.load(scratch + num_parts * (HEAD_DIM + 1) + part, mask=row_ok, other=0.0)
        acc = acc * keep[:, None] + w[:, None] * tl.load(scratch + part[:, None] * HEAD_DIM + offs_d[None, :],
                                                         mask=row_ok[:, None], other=0.0)
        m_run = m_new
    o = acc / l_run[:, None]
    tl.store(out + tokens[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
             o.to(out.dtype.element_ty), mask=row_ok[:, None])


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, layout: PrefillLayout,
                      scale: float, out: torch.Tensor, config: PrefillConfig | None = None,
                      num_splits: int | None = None) -> None:
    """Attention of every prefill chunk in `layout` (rows of q [T, heads, D]) over its cached prefix
    and causally within the chunk; the chunk's own K/V must already be in the cache, and both
    caches must share one layout.

    Writes only the chunks' rows of out [T, heads, D] (any strides with a contiguous last dim);
    allocates only the split-KV scratch. config overrides the tile; num_splits the split-KV
    partitions per row tile (default: prefill_split_count from the layout's row count and
    max_context_len, so a padded CUDA-graph layout gets one fixed count).
    """
    num_heads, head_dim = q.shape[1], q.shape[2]
    kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_heads // kv_heads
    config = config or prefill_config(head_dim, k_cache.dtype)
    num_spans = layout.q_lens.shape[0]
    if num_spans == 0:
        return
    # An upper bound on the chunks' row tiles: sum(ceil(n * group / m)) <= rows * group / m + chunks.
    tiles = layout.num_rows * group // config.block_m + num_spans
    if num_splits is None:
        num_splits = prefill_split_count(tiles, kv_heads, layout.max_context_len, _num_sms(q.device))
    if num_splits < 1:
        raise ValueError(f"num_splits={num_splits} is invalid: use an integer >= 1")
    split = num_splits > 1
    num_tokens = q.shape[0]
    scratch = torch.empty(num_tokens * num_heads * num_splits * (head_dim + 2) if split else 0,
                          dtype=torch.float32, device=q.device)
    _prefill_kernel[(tiles, kv_heads, num_splits)](
        q, k_cache, v_cache, out, scratch, layout.q_starts, layout.q_lens, layout.start_positions,
        layout.block_tables, scale * LOG2E, num_spans, num_tokens,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        layout.block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        SPAN_BLOCK=SPAN_BLOCK, SPLIT=split, DOT_PRECISION=dot_precision(k_cache.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if split:
        _prefill_merge_kernel[(tiles, kv_heads)](
            out, scratch, layout.q_starts, layout.q_lens, num_spans, num_tokens, num_splits,
            out.stride(0), out.stride(1), GROUP=group, HEAD_DIM=head_dim, BLOCK_M=config.block_m,
            SPAN_BLOCK=SPAN_BLOCK, num_warps=4,
        )
