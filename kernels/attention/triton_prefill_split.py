"""Prefill-chunk attention whose split-KV count is chosen on the device, from the real chunks.

Why. triton_prefill picks its split count on the host from the layout's bounds. A CUDA graph's
layout bounds the rows by the graph's token count and the chunks by MAX_GRAPH_PREFILLS (32), and
every chunk may waste part of a row tile, so the 128-token graph that a 100-token chunk pads to
has a bound of 128 * 4 / 128 + 32 = 36 row tiles (llama-3-8b: GQA 4, 128 rows a tile), 288
programs with 8 KV heads: "enough" for 132 SMs, so the policy never splits. Yet the chunk has 4
real tiles: 32 programs, each walking all 4k keys of a cached prefix alone (131 us a layer on an
H200, where the split kernel alone needs a fraction of that). Multiplying the padded grid by a
split count instead would launch thousands of programs that only exit.

Here the grid is 1-D, `wave` programs (TARGET_PROGRAMS_PER_SM per SM) or the unsplit bound on
(row tile, KV head) pairs, whichever is larger. Every program counts the real row tiles from the
chunks' lengths and takes splits = wave // (tiles * kv_heads) (at least 1, at most max_splits):
program p is split p % splits of (row tile, KV head) pair p // splits, last row tiles first as in
triton_prefill. A tile cuts its keys into min(splits, shared // min_partition) parts of whole key
tiles, where shared are the keys every row of it sees: the last part ends with the causal band,
and the boundaries balance the key tiles, band included, so that the last part is not the
longest. A tile of one part writes its output directly; the parts of the others go to a scratch
slot per program (splits > 1 only when pairs * splits <= wave, so `wave` slots suffice) and a
second kernel merges them, BLOCK_M // MERGE_ROWS programs per tile. A step whose tiles fill the
wave, or whose chunks have no long prefix, runs as the unsplit kernel does, with a merge launch
whose programs exit at once.

Keys are read through the block table one cache block at a time: a tile of BLOCK_N positions
loads the BLOCK_N / BLOCK_SIZE block ids it spans once (or one id when a block holds several
tiles), and each position's row is block * stride + slot: HEAD_DIM contiguous elements.

Whether the engine runs this kernel or triton_prefill's is DEVICE_SPLIT_MIN_CONTEXT below.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adaptive_sarathi.kernels.attention.metadata import PrefillLayout
from adaptive_sarathi.kernels.attention.triton_common import LOG2E, dot_precision, online_softmax
from adaptive_sarathi.kernels.attention.triton_decode import MAX_SPLITS, MIN_PARTITION, TARGET_PROGRAMS_PER_SM, _num_sms
from adaptive_sarathi.kernels.attention.triton_prefill import SPAN_BLOCK, PrefillConfig, _find_chunk, prefill_config

# The triton backend runs this kernel for a layout whose max_context_len (a CUDA graph's: the
# context window) is at least this many tokens, and triton_prefill's otherwise; None: never.
# Off until experiments/cached_prefix_ttft.py on the GPU shows it wins (its "device split" rows
# against "current, graph layout", and the engine TTFT ratio); then set it to e.g. 1024.
DEVICE_SPLIT_MIN_CONTEXT: int | None = None
# Rows a merge program takes: a few programs per row tile, so that the merge of a handful of
# tiles is not a handful of programs each reading every part in turn.
MERGE_ROWS = 32


# Tiles by shape class. "short": layouts of at most SHORT_ROWS query rows (the CUDA graphs a short
# chunk after a long prefix pads to), keyed by head dim, in bf16/fp16; everything else (long
# chunks, fp32) takes triton_prefill's tile. The short entries hold triton_prefill's tiles too
# (swept on an H100 on long chunks) until the sweep of experiments/cached_prefix_ttft.py on the
# GPU shows a better one for this class; a CUDA graph of each size captures its own tile.
SHORT_ROWS = 512
SHORT_TILES = {
    64: PrefillConfig(block_m=128, block_n=64, num_warps=8, num_stages=3),
    128: PrefillConfig(block_m=128, block_n=128, num_warps=8, num_stages=3),
    256: PrefillConfig(block_m=64, block_n=32, num_warps=4, num_stages=2),
}


def device_split_config(layout: PrefillLayout, head_dim: int, dtype: torch.dtype) -> PrefillConfig:
    """The tile prefill_attention_device_split runs `layout` with by default (see SHORT_TILES)."""
    if layout.num_rows <= SHORT_ROWS and dtype != torch.float32 and head_dim in SHORT_TILES:
        return SHORT_TILES[head_dim]
    return prefill_config(head_dim, dtype)


def uses_device_split(layout: PrefillLayout) -> bool:
    """Whether the triton backend runs prefill_attention_device_split for `layout`."""
    return DEVICE_SPLIT_MIN_CONTEXT is not None and layout.max_context_len >= DEVICE_SPLIT_MIN_CONTEXT


@triton.jit
def _split_plan(q_lens, num_spans, wave, max_splits, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                BLOCK_M: tl.constexpr, SPAN_BLOCK: tl.constexpr):
    # (real row tiles, (row tile, KV head) pairs, splits per pair): the same in both kernels.
    tiles = 0
    for base in range(0, num_spans, SPAN_BLOCK):
        offs_s = base + tl.arange(0, SPAN_BLOCK)
        lens = tl.load(q_lens + offs_s, mask=offs_s < num_spans, other=0)
        tiles += tl.sum((lens * GROUP + BLOCK_M - 1) // BLOCK_M, 0)
    pairs = tiles * KV_HEADS
    splits = tl.minimum(tl.maximum(wave // tl.maximum(pairs, 1), 1), max_splits)
    return tiles, pairs, splits


@triton.jit
def _tile_keys(start_pos, q_len, tile, splits, min_partition, GROUP: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr):
    # (shared_end, kv_end, parts) of row tile `tile` of a chunk: keys [0, shared_end) are visible to
    # all its rows (whole key tiles), [shared_end, kv_end) is the causal band, and the keys go to
    # `parts` programs, with at least min_partition (>= BLOCK_N) shared keys per part.
    r0 = tile * BLOCK_M
    first_t = r0 // GROUP
    last_t = tl.minimum((r0 + BLOCK_M - 1) // GROUP, q_len - 1)
    shared_end = (start_pos + first_t + 1) // BLOCK_N * BLOCK_N
    kv_end = start_pos + last_t + 1
    parts = tl.minimum(splits, tl.maximum(shared_end // min_partition, 1))
    return shared_end, kv_end, parts


@triton.jit
def _kv_rows(table_row, n0, kv_end, kv_head, stride_kb, stride_ks, stride_kh, BLOCK_SIZE: tl.constexpr,
             BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
    # Element offsets [BLOCK_N] of the K/V rows of positions n0 .. n0 + BLOCK_N - 1 (n0 a multiple
    # of BLOCK_N) for one KV head. MASKED: positions from kv_end on may lie past the block table's
    # end, so their block ids are not read (their rows point at block 0 and must not be loaded).
    if BLOCK_N >= BLOCK_SIZE:
        first = n0 // BLOCK_SIZE + tl.arange(0, BLOCK_N // BLOCK_SIZE)
        if MASKED:
            blocks = tl.load(table_row + first, mask=first * BLOCK_SIZE < kv_end, other=0)
        else:
            blocks = tl.load(table_row + first)
        # int64 before multiplying: block * stride exceeds int32 on caches over 2**31 elements.
        rows = (blocks.to(tl.int64)[:, None] * stride_kb
                + tl.arange(0, BLOCK_SIZE).to(tl.int64)[None, :] * stride_ks)
        rows = tl.reshape(rows, [BLOCK_N])
    else:  # the tile lies inside one block (both are powers of two)
        block = tl.load(table_row + n0 // BLOCK_SIZE).to(tl.int64)
        rows = block * stride_kb + (n0 % BLOCK_SIZE + tl.arange(0, BLOCK_N)).to(tl.int64) * stride_ks
    return rows + kv_head.to(tl.int64) * stride_kh


# Step-dependent scalars are not specialized on: Triton compiles separate variants for values of
# 1 and multiples of 16, which would compile mid-serving.
@triton.jit(do_not_specialize=["num_spans", "stride_bt", "wave", "max_splits", "min_partition"])
def _device_split_kernel(q, k_cache, v_cache, out, scratch, q_starts, q_lens, start_positions, block_tables,
                         qk_scale, num_spans, wave, max_splits, min_partition,
                         stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_bt, stride_ot, stride_oh,
                         KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                         BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         SPAN_BLOCK: tl.constexpr, DOT_PRECISION: tl.constexpr):
    p = tl.program_id(0)
    tiles, pairs, splits = _split_plan(q_lens, num_spans, wave, max_splits, KV_HEADS, GROUP, BLOCK_M, SPAN_BLOCK)
    if p >= pairs * splits:
        return
    pair = p // splits
    split = p % splits
    kv_head = pair % KV_HEADS
    span, tile = _find_chunk(tiles - 1 - pair // KV_HEADS, q_lens, num_spans, GROUP, BLOCK_M, SPAN_BLOCK)
    q_len = tl.load(q_lens + span)
    start_pos = tl.load(start_positions + span)
    shared_end, kv_end, parts = _tile_keys(start_pos, q_len, tile, splits, min_partition, GROUP, BLOCK_M, BLOCK_N)
    if split >= parts:
        return
    # Part `split` takes key tiles [split * total // parts, (split + 1) * total // parts) of all
    # `total`, band included, clipped to the shared ones; the last takes the rest and the band. A
    # band wider than a part's share leaves a middle part empty (its m stays -inf); part 0 never is.
    key_tiles = shared_end // BLOCK_N
    total = key_tiles + tl.cdiv(kv_end - shared_end, BLOCK_N)
    last = split == parts - 1
    shared_start = tl.minimum(split * total // parts, key_tiles) * BLOCK_N
    shared_stop = tl.where(last, key_tiles, tl.minimum((split + 1) * total // parts, key_tiles)) * BLOCK_N
    band_stop = tl.where(last, kv_end, shared_end)

    offs_r = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_r < q_len * GROUP
    t = offs_r // GROUP
    heads = kv_head * GROUP + offs_r % GROUP
    tokens = (tl.load(q_starts + span) + t).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    q_tile = tl.load(q + tokens[:, None] * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                     mask=row_ok[:, None], other=0.0)
    positions = start_pos + t

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    table_row = block_tables + span.to(tl.int64) * stride_bt
    for n0 in range(shared_start, shared_stop, BLOCK_N):
        rows = _kv_rows(table_row, n0, kv_end, kv_head, stride_kb, stride_ks, stride_kh, BLOCK_SIZE, BLOCK_N, False)
        k = tl.load(k_cache + rows[:, None] + offs_d[None, :])
        s = tl.dot(q_tile, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        v = tl.load(v_cache + rows[:, None] + offs_d[None, :])
        acc, m_i, l_i = online_softmax(acc, m_i, l_i, s, v, DOT_PRECISION)
    for n0 in range(shared_end, band_stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid = offs_n < kv_end
        rows = _kv_rows(table_row, n0, kv_end, kv_head, stride_kb, stride_ks, stride_kh, BLOCK_SIZE, BLOCK_N, True)
        k = tl.load(k_cache + rows[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0)
        s = tl.dot(q_tile, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(offs_n[None, :] <= positions[:, None], s, float("-inf"))
        v = tl.load(v_cache + rows[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0)
        acc, m_i, l_i = online_softmax(acc, m_i, l_i, s, v, DOT_PRECISION)

    if parts == 1:
        o = acc / l_i[:, None]
        tl.store(out + tokens[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
                 o.to(out.dtype.element_ty), mask=row_ok[:, None])
    else:
        # Slot p of scratch: BLOCK_M rows of HEAD_DIM unnormalized outputs; after all `wave` slots
        # of those, the rows' running maxes, then their running sums.
        slot_rows = p * BLOCK_M + tl.arange(0, BLOCK_M)
        tl.store(scratch + slot_rows[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=row_ok[:, None])
        tl.store(scratch + wave * BLOCK_M * HEAD_DIM + slot_rows, m_i, mask=row_ok)
        tl.store(scratch + wave * BLOCK_M * (HEAD_DIM + 1) + slot_rows, l_i, mask=row_ok)


@triton.jit(do_not_specialize=["num_spans", "wave", "max_splits", "min_partition"])
def _device_merge_kernel(out, scratch, q_starts, q_lens, start_positions, num_spans, wave, max_splits, min_partition,
                         stride_ot, stride_oh, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPAN_BLOCK: tl.constexpr,
                         MERGE_ROWS: tl.constexpr):
    # Program (pair, sub) merges rows [sub * MERGE_ROWS, (sub + 1) * MERGE_ROWS) of the tile of
    # (row tile, KV head) pair `pair` of the split kernel.
    pair = tl.program_id(0)
    sub = tl.program_id(1)
    tiles, pairs, splits = _split_plan(q_lens, num_spans, wave, max_splits, KV_HEADS, GROUP, BLOCK_M, SPAN_BLOCK)
    if (splits == 1) | (pair >= pairs):
        return
    kv_head = pair % KV_HEADS
    span, tile = _find_chunk(tiles - 1 - pair // KV_HEADS, q_lens, num_spans, GROUP, BLOCK_M, SPAN_BLOCK)
    q_len = tl.load(q_lens + span)
    _shared_end, _kv_end, parts = _tile_keys(tl.load(start_positions + span), q_len, tile, splits, min_partition,
                                             GROUP, BLOCK_M, BLOCK_N)
    if parts == 1:
        return  # the split kernel wrote these rows
    local = sub * MERGE_ROWS + tl.arange(0, MERGE_ROWS)
    offs_r = tile * BLOCK_M + local
    row_ok = offs_r < q_len * GROUP
    tokens = (tl.load(q_starts + span) + offs_r // GROUP).to(tl.int64)
    heads = kv_head * GROUP + offs_r % GROUP
    offs_d = tl.arange(0, HEAD_DIM)
    # Part 0 always has keys (it starts at key 0, and parts <= shared key tiles), so m_run is
    # finite from the first step on (whose keep factor is exp2(-inf) = 0); a later part without
    # keys has m = -inf and weight exp2(-inf) = 0.
    m_run = tl.full([MERGE_ROWS], float("-inf"), dtype=tl.float32)
    l_run = tl.zeros([MERGE_ROWS], dtype=tl.float32)
    acc = tl.zeros([MERGE_ROWS, HEAD_DIM], dtype=tl.float32)
    for s in range(0, parts):
        slot_rows = (pair * splits + s) * BLOCK_M + local
        m = tl.load(scratch + wave * BLOCK_M * HEAD_DIM + slot_rows, mask=row_ok, other=0.0)
        m_new = tl.maximum(m_run, m)
        keep = tl.exp2(m_run - m_new)
        w = tl.exp2(m - m_new)
        l_run = l_run * keep + w * tl.load(scratch + wave * BLOCK_M * (HEAD_DIM + 1) + slot_rows, mask=row_ok,
                                           other=1.0)
        acc = acc * keep[:, None] + w[:, None] * tl.load(scratch + slot_rows[:, None] * HEAD_DIM + offs_d[None, :],
                                                         mask=row_ok[:, None], other=0.0)
        m_run = m_new
    o = acc / l_run[:, None]
    tl.store(out + tokens[:, None] * stride_ot + heads[:, None] * stride_oh + offs_d[None, :],
             o.to(out.dtype.element_ty), mask=row_ok[:, None])


def split_plan(q_lens: list[int], start_positions: list[int], group: int, kv_heads: int, config: PrefillConfig,
               wave: int, max_splits: int = MAX_SPLITS, min_partition: int = MIN_PARTITION
               ) -> tuple[int, list[tuple[int, int, int]]]:
    """What the kernels decide on the device for chunks of q_lens tokens after start_positions
    cached ones, computed on the host (for reports and tests): (splits per pair, and per real row
    tile in program order (chunk, tile within it, parts of its shared keys)). Program p is part
    p % splits of pair p // splits; the pairs of a row tile are its kv_heads consecutive ones."""
    bm, bn = config.block_m, config.block_n
    min_partition = max(min_partition, bn)
    tiles = [(i, t) for i, n in enumerate(q_lens) for t in range(-(-n * group // bm))]
    splits = min(max(wave // max(len(tiles) * kv_heads, 1), 1), max_splits)
    plan = []
    for i, t in reversed(tiles):  # last tiles first
        shared_end = (start_positions[i] + t * bm // group + 1) // bn * bn
        plan.append((i, t, min(splits, max(shared_end // min_partition, 1))))
    return splits, plan


def scratch_elements(wave: int, config: PrefillConfig, head_dim: int) -> int:
    """fp32 elements of the scratch the split kernel writes parts to: wave slots of BLOCK_M rows."""
    return wave * config.block_m * (head_dim + 2)


def default_wave(device: torch.device) -> int:
    """Programs the split count aims for on `device`: TARGET_PROGRAMS_PER_SM per SM."""
    return TARGET_PROGRAMS_PER_SM * _num_sms(device)


def prefill_attention_device_split(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                   layout: PrefillLayout, scale: float, out: torch.Tensor,
                                   config: PrefillConfig | None = None, wave: int | None = None,
                                   max_splits: int = MAX_SPLITS, min_partition: int = MIN_PARTITION,
                                   scratch: torch.Tensor | None = None) -> None:
    """The contract of triton_prefill.prefill_attention (same inputs, writes only the chunks' rows
    of out), with the split count chosen on the device: two launches whose grids depend only on
    the layout's num_rows and chunk count, so a CUDA graph captured for a padded layout splits as
    the chunks of each replay need.

    config: the tile (default device_split_config). wave: the programs a split aims for (default
    TARGET_PROGRAMS_PER_SM per SM; also the number of scratch slots); max_splits bounds the parts
    of one row tile; min_partition (raised to the tile's BLOCK_N) the shared keys of each part.
    Allocates only the scratch (scratch_elements fp32), unless given `scratch`, a contiguous
    float32 tensor of at least that many elements.
    Raises ValueError for a wave or max_splits below 1, or a scratch too small."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_heads // kv_heads
    config = config or device_split_config(layout, head_dim, k_cache.dtype)
    num_spans = layout.q_lens.shape[0]
    if num_spans == 0:
        return
    wave = default_wave(q.device) if wave is None else wave
    if wave < 1 or max_splits < 1:
        raise ValueError(f"wave={wave} and max_splits={max_splits} must be integers >= 1")
    min_partition = max(min_partition, config.block_n)
    # An upper bound on the (row tile, KV head) pairs: sum(ceil(n * group / m)) <= rows * group / m + chunks.
    pairs = (layout.num_rows * group // config.block_m + num_spans) * kv_heads
    size = scratch_elements(wave, config, head_dim)
    if scratch is None:
        scratch = torch.empty(size, dtype=torch.float32, device=q.device)
    elif scratch.dtype != torch.float32 or scratch.numel() < size or not scratch.is_contiguous():
        raise ValueError(f"scratch must be a contiguous float32 tensor of at least {size} elements, "
                         f"got {scratch.dtype} of {scratch.numel()}")
    _device_split_kernel[(max(wave, pairs),)](
        q, k_cache, v_cache, out, scratch, layout.q_starts, layout.q_lens, layout.start_positions,
        layout.block_tables, scale * LOG2E, num_spans, wave, max_splits, min_partition,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        layout.block_tables.stride(0), out.stride(0), out.stride(1),
        KV_HEADS=kv_heads, GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_M=config.block_m,
        BLOCK_N=config.block_n, SPAN_BLOCK=SPAN_BLOCK, DOT_PRECISION=dot_precision(k_cache.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    # Pairs merge only when splits >= 2, that is when pairs * 2 <= wave.
    merge_rows = min(MERGE_ROWS, config.block_m)
    _device_merge_kernel[(max(1, min(pairs, wave // 2)), config.block_m // merge_rows)](
        out, scratch, layout.q_starts, layout.q_lens, layout.start_positions, num_spans, wave, max_splits,
        min_partition, out.stride(0), out.stride(1), KV_HEADS=kv_heads, GROUP=group, HEAD_DIM=head_dim,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, SPAN_BLOCK=SPAN_BLOCK, MERGE_ROWS=merge_rows, num_warps=4,
    )
