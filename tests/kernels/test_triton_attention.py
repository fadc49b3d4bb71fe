"""The Triton paged-attention kernels equal the plain-torch reference on fresh random steps.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest.py sets
TRITON_INTERPRET=1) at small sizes, in fp32 and fp16 (the interpreter's bf16 products are wrong,
so bf16 is checked on the GPU only); with a GPU the same small cases run on it. Every output
buffer starts as NaN, so a row the kernels skip fails the check. The `gpu` tests run real sizes.
"""

import pytest
import torch
from paged_case import build_step

from adaptive_sarathi.kernels.attention import paged_attention_reference
from adaptive_sarathi.kernels.attention.metadata import PrefillLayout

pytest.importorskip("triton")

from adaptive_sarathi.kernels.attention.triton_backend import triton_paged_attention  # noqa: E402
from adaptive_sarathi.kernels.attention.triton_decode import (  # noqa: E402
    MAX_SPLITS,
    MIN_PARTITION,
    DecodeConfig,
    decode_attention,
    decode_config,
    split_partition,
)
from adaptive_sarathi.kernels.attention.triton_prefill import (  # noqa: E402
    SPAN_BLOCK,
    PrefillConfig,
    prefill_attention,
    prefill_split_count,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Tiles far smaller than the defaults, so that small cases cross many tiles, partitions and blocks.
TINY_DECODE = DecodeConfig(block_n=16, num_warps=4, num_stages=2)
TINY_PREFILL = PrefillConfig(block_m=16, block_n=16, num_warps=4, num_stages=2)
LAYOUTS = [  # heads, kv_heads, head_dim, block_size
    (4, 4, 16, 4),  # one query head per KV head
    (4, 2, 64, 8),  # groups of 2
    (8, 2, 16, 16),  # groups of 4
    (6, 2, 16, 8),  # groups of 3: a tile's rows split tokens unevenly
]


def poisoned(q: torch.Tensor) -> torch.Tensor:
    return torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)


def reference(case, scale: float) -> torch.Tensor:
    f = lambda x: x.float()  # noqa: E731
    return paged_attention_reference(f(case.q), f(case.k_cache), f(case.v_cache), case.meta, scale)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any(), "some output elements were not written"
    return ((out.float() - ref).norm() / ref.norm()).item()


def assert_fp32_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert not torch.isnan(out).any(), "some output elements were not written"
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size", LAYOUTS)
def test_decode_matches_reference(seed, heads, kv_heads, head_dim, block_size):
    gen = torch.Generator().manual_seed(seed)
    # Contexts of one token, exactly one and two partitions, and random lengths.
    contexts = [1, 32, 64] + torch.randint(2, 100, (3,), generator=gen).tolist()
    case = build_step([(c - 1, 1) for c in contexts], heads, kv_heads, head_dim, block_size, 256, gen,
                      device=DEVICE)
    meta, scale = case.meta, head_dim ** -0.5
    ref = reference(case, scale)
    # One partition per sequence (direct write), then several merged by the second kernel.
    for partition in (112, 32):
        out = poisoned(case.q)
        decode_attention(case.q, case.k_cache, case.v_cache, meta.decode_block_tables, meta.decode_context_lens,
                         meta.max_decode_context_len, scale, out, partition=partition, config=TINY_DECODE)
        assert_fp32_close(out, ref)
    # Each sequence cut into its own partitions (the CUDA-graph mode): one, and more than a short
    # context has tiles.
    for num_splits in (1, 3, 8):
        out = poisoned(case.q)
        decode_attention(case.q, case.k_cache, case.v_cache, meta.decode_block_tables, meta.decode_context_lens,
                         0, scale, out, config=TINY_DECODE, num_splits=num_splits)
        assert_fp32_close(out, ref)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size", LAYOUTS)
def test_prefill_matches_reference(seed, heads, kv_heads, head_dim, block_size):
    gen = torch.Generator().manual_seed(seed)
    cached, new = (int(x) for x in torch.randint(1, 60, (2,), generator=gen))
    # A fresh prompt, a chunk after a random prefix, one after a tile-aligned prefix, a 2-token chunk.
    seqs = [(0, 21), (cached, new + 1), (32, 16), (47, 2)]
    case = build_step(seqs, heads, kv_heads, head_dim, block_size, 256, gen, device=DEVICE)
    out = poisoned(case.q)
    prefill_attention(case.q, case.k_cache, case.v_cache, case.meta.prefill_layout, head_dim ** -0.5, out,
                      config=TINY_PREFILL)
    assert_fp32_close(out, reference(case, head_dim ** -0.5))


@pytest.mark.parametrize("num_splits", [2, 3, 7])
@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size", LAYOUTS)
def test_split_kv_prefill_matches_reference(num_splits, heads, kv_heads, head_dim, block_size):
    """Split-KV: short chunks after long prefixes (the case it is for), a fresh prompt whose tiles
    have no shared keys (every partition but the last empty), a prefix shorter than the
    partitions, and a chunk of tokens that cross several row tiles."""
    gen = torch.Generator().manual_seed(100 * num_splits + heads)
    cached = int(torch.randint(90, 140, (1,), generator=gen))
    seqs = [(cached, 5), (0, 9), (17, 3), (cached // 2, 20), (64, 1 + num_splits)]
    case = build_step(seqs, heads, kv_heads, head_dim, block_size, 512, gen, device=DEVICE)
    out = poisoned(case.q)
    prefill_attention(case.q, case.k_cache, case.v_cache, case.meta.prefill_layout, head_dim ** -0.5, out,
                      config=TINY_PREFILL, num_splits=num_splits)
    assert_fp32_close(out, reference(case, head_dim ** -0.5))


def test_split_kv_prefill_of_a_padded_layout_and_more_splits_than_tiles():
    """A CUDA graph's padded layout (spare spans of q_len 0) under a split, and more partitions than
    a tile has key tiles (most of them empty)."""
    gen = torch.Generator().manual_seed(5)
    case = build_step([(70, 4), (3, 6)], 4, 2, 16, 4, 128, gen, device=DEVICE)
    layout = case.meta.prefill_layout
    pad = lambda t: torch.cat([t, torch.zeros((3, *t.shape[1:]), dtype=t.dtype, device=t.device)])  # noqa: E731
    padded = PrefillLayout(pad(layout.spans.T).T.contiguous(), pad(layout.block_tables), num_rows=layout.num_rows + 8,
                           max_q_len=32, max_context_len=128)
    ref = reference(case, 0.25)
    for splits in (4, 16):
        out = poisoned(case.q)
        prefill_attention(case.q, case.k_cache, case.v_cache, padded, 0.25, out, config=TINY_PREFILL,
                          num_splits=splits)
        assert_fp32_close(out, ref)


def test_prefill_split_policy():
    sms = 132
    assert prefill_split_count(4, 8, 4196, sms) == 8  # 100 tokens (GQA 4, 128 rows a tile) over 4k keys
    assert prefill_split_count(4, 8, 300, sms) == 1  # too short to split
    assert prefill_split_count(40, 8, 8192, sms) == 1  # 320 programs fill the GPU already
    assert prefill_split_count(1, 1, 10 ** 6, sms) == MAX_SPLITS
    with pytest.raises(ValueError, match="num_splits"):
        gen = torch.Generator().manual_seed(0)
        case = build_step([(8, 4)], 4, 2, 16, 4, 16, gen, device=DEVICE)
        prefill_attention(case.q, case.k_cache, case.v_cache, case.meta.prefill_layout, 0.25, poisoned(case.q),
                          num_splits=0)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size", LAYOUTS)
def test_mixed_step_matches_reference(seed, heads, kv_heads, head_dim, block_size):
    """The backend entry point with its default tiles and split policy."""
    gen = torch.Generator().manual_seed(100 + seed)
    seqs = [(int(c), 1) for c in torch.randint(0, 150, (4,), generator=gen)] + [(0, 40), (70, 30)]
    case = build_step(seqs, heads, kv_heads, head_dim, block_size, 256, gen, device=DEVICE)
    out = poisoned(case.q)
    assert triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, head_dim ** -0.5, out=out) is out
    assert_fp32_close(out, reference(case, head_dim ** -0.5))


def test_each_kernel_writes_only_its_rows():
    gen = torch.Generator().manual_seed(5)
    case = build_step([(20, 1), (3, 1), (0, 17), (9, 6)], 4, 2, 16, 8, 64, gen, device=DEVICE)
    meta, nd, out = case.meta, case.meta.num_decode_tokens, poisoned(case.q)
    decode_attention(case.q, case.k_cache, case.v_cache, meta.decode_block_tables, meta.decode_context_lens,
                     meta.max_decode_context_len, 0.25, out, partition=16, config=TINY_DECODE)
    assert not out[:nd].isnan().any() and out[nd:].isnan().all()
    prefill_attention(case.q, case.k_cache, case.v_cache, meta.prefill_layout, 0.25, out, config=TINY_PREFILL)
    assert_fp32_close(out, reference(case, 0.25))


def test_padded_launch_of_a_cuda_graph():
    """Kernels launched for more rows than the step has, as a CUDA graph captured at a padded size
    runs them: decode rows of context 0 and prefill spans of length 0 are skipped, and a grid
    sized for more prefill rows than there are gives the same output."""
    gen = torch.Generator().manual_seed(11)
    case = build_step([(20, 1), (3, 1), (0, 17), (9, 6), (40, 3)], 8, 2, 16, 8, 64, gen, device=DEVICE)
    meta, layout, nd = case.meta, case.meta.prefill_layout, case.meta.num_decode_tokens
    spare = 3
    pad = lambda t, value: torch.cat([t, torch.full((spare, *t.shape[1:]), value, dtype=t.dtype,  # noqa: E731
                                                    device=t.device)])
    padded = PrefillLayout(pad(layout.spans.T, 0).T.contiguous(), pad(layout.block_tables, 0), num_rows=layout.num_rows + 40,
                           max_q_len=64, max_context_len=64)
    for num_splits in (1, 2):  # the decode kernel alone, and with its merge kernel
        out = poisoned(case.q)
        out[nd:] = 7.0
        decode_attention(case.q, case.k_cache, case.v_cache, pad(meta.decode_block_tables, 0),
                         pad(meta.decode_context_lens, 0), 0, 0.25, out, config=TINY_DECODE, num_splits=num_splits)
        # Padded decode rows [nd, nd + spare) are prefill rows here: the decode kernels must leave them.
        assert not out[:nd].isnan().any() and (out[nd:] == 7.0).all()
    prefill_attention(case.q, case.k_cache, case.v_cache, padded, 0.25, out, config=TINY_PREFILL)
    assert_fp32_close(out, reference(case, 0.25))



def test_prefill_of_more_chunks_than_one_span_block():
    """Programs find their chunk by scanning chunk lengths SPAN_BLOCK at a time: 21 chunks (and a
    grid padded with 14 empty spans past them) cross two and three such blocks."""
    gen = torch.Generator().manual_seed(13)
    lens = torch.randint(2, 12, (21,), generator=gen).tolist()
    prefixes = torch.randint(0, 30, (21,), generator=gen).tolist()
    case = build_step(list(zip(prefixes, lens)), 4, 2, 16, 4, 512, gen, device=DEVICE)
    layout, spare = case.meta.prefill_layout, 14
    assert layout.q_lens.shape[0] > SPAN_BLOCK
    ref = reference(case, 0.25)
    out = poisoned(case.q)
    prefill_attention(case.q, case.k_cache, case.v_cache, layout, 0.25, out, config=TINY_PREFILL)
    assert_fp32_close(out, ref)
    pad = lambda t: torch.cat([t, torch.zeros((spare, *t.shape[1:]), dtype=t.dtype, device=t.device)])  # noqa: E731
    padded = PrefillLayout(pad(layout.spans.T).T.contiguous(), pad(layout.block_tables), num_rows=layout.num_rows + 16,
                           max_q_len=64, max_context_len=64)
    out = poisoned(case.q)
    prefill_attention(case.q, case.k_cache, case.v_cache, padded, 0.25, out, config=TINY_PREFILL)
    assert_fp32_close(out, ref)

def test_fp16_and_strided_queries():
    """q as the model makes it (a view into a fused QKV projection), fp16, a fresh output."""
    gen = torch.Generator().manual_seed(7)
    heads, kv_heads, head_dim = 8, 2, 64
    case = build_step([(40, 1), (9, 1), (0, 19), (25, 20)], heads, kv_heads, head_dim, 8, 64, gen,
                      dtype=torch.float16, device=DEVICE)
    qkv = torch.randn(case.q.shape[0], (heads + 2 * kv_heads) * head_dim, dtype=torch.float16, device=DEVICE)
    q = qkv[:, :heads * head_dim].unflatten(1, (heads, head_dim))
    q.copy_(case.q)
    out = triton_paged_attention(q, case.k_cache, case.v_cache, case.meta, head_dim ** -0.5)
    assert out.dtype == torch.float16 and out.shape == q.shape
    assert rel_err(out, reference(case, head_dim ** -0.5)) < 2e-3


def test_split_policy():
    sms, block_n = 132, 64
    assert split_partition(64, 8, 8192, block_n, sms) == 8192  # 512 programs already fill the GPU
    assert split_partition(1, 8, 8192, block_n, sms) == 512  # one sequence: 16 partitions
    assert split_partition(1, 8, 300, block_n, sms) == 320  # too short to split
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch, kv_heads, ctx = (int(torch.randint(1, hi, (1,), generator=gen)) for hi in (300, 16, 200_000))
        part = split_partition(batch, kv_heads, ctx, block_n, sms)
        splits = -(-ctx // part)
        assert part % block_n == 0 and 1 <= splits <= MAX_SPLITS
        assert splits == 1 or (part >= MIN_PARTITION and batch * kv_heads * splits <= 2 * sms)


def test_rejects_what_the_kernels_do_not_take():
    gen = torch.Generator().manual_seed(0)
    case = build_step([(3, 1), (0, 5)], 4, 2, 16, 4, 16, gen, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim"):
        triton_paged_attention(case.q[..., :12], case.k_cache[..., :12], case.v_cache[..., :12], case.meta, 1.0)
    with pytest.raises(ValueError, match="dtype"):
        triton_paged_attention(case.q.half(), case.k_cache, case.v_cache, case.meta, 1.0)
    with pytest.raises(ValueError, match="multiple of the tile"):
        meta = case.meta
        decode_attention(case.q[:1], case.k_cache, case.v_cache, meta.decode_block_tables, meta.decode_context_lens,
                         meta.max_decode_context_len, 1.0, poisoned(case.q[:1]), partition=24, config=TINY_DECODE)


# Real sizes on the GPU: bf16 unless stated, Llama-3-8B-like heads (32 query, 8 KV, dim 128).
BF16_TOL = 1e-2


def _gpu_case(seqs, seed, heads=32, kv_heads=8, head_dim=128, block_size=16, dtype=torch.bfloat16, first_block=0):
    gen = torch.Generator().manual_seed(seed)
    blocks = first_block + sum(-(-(c + n) // block_size) for c, n in seqs) + 8
    return build_step(seqs, heads, kv_heads, head_dim, block_size, blocks, gen, dtype=dtype, device="cuda",
                      first_block=first_block)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(2))
def test_gpu_decode_batch_64_long_contexts(seed):
    gen = torch.Generator().manual_seed(seed)
    contexts = [8192, 1, 4096] + torch.randint(1, 8193, (61,), generator=gen).tolist()
    case = _gpu_case([(c - 1, 1) for c in contexts], seed)
    out = triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 128 ** -0.5,
                                 out=poisoned(case.q))
    assert rel_err(out, reference(case, 128 ** -0.5)) < BF16_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_gpu_decode_small_batch_splits(batch):
    contexts = [8192, 5000, 777][:batch]
    case = _gpu_case([(c - 1, 1) for c in contexts], batch)
    block_n = decode_config(128, torch.bfloat16).block_n
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert split_partition(batch, 8, 8192, block_n, sms) < 8192  # the policy does split here
    out = triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 128 ** -0.5,
                                 out=poisoned(case.q))
    assert rel_err(out, reference(case, 128 ** -0.5)) < BF16_TOL


@pytest.mark.gpu
def test_gpu_mixed_step_chunk_after_cached_prefix():
    """64 decodes, a 2048-token chunk after a 2048-token cached prefix and a fresh 1000-token prompt."""
    gen = torch.Generator().manual_seed(3)
    seqs = [(int(c), 1) for c in torch.randint(0, 8192, (64,), generator=gen)] + [(2048, 2048), (0, 1000)]
    case = _gpu_case(seqs, 3)
    out = triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 128 ** -0.5,
                                 out=poisoned(case.q))
    ref = reference(case, 128 ** -0.5)
    assert rel_err(out, ref) < BF16_TOL
    chunk = slice(case.rows[64], case.rows[64] + 2048)
    assert rel_err(out[chunk], ref[chunk]) < BF16_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("seqs", [[(4096, 100)], [(4096, 100), (8000, 37)], [(0, 100), (4090, 100)]])
def test_gpu_split_kv_prefill_of_short_chunks_after_long_prefixes(seqs):
    """The split-KV path at llama-3-8b's shapes (32 heads, 8 KV heads): 100 new tokens after a 4k
    cached prefix, as a prefix-cache hit runs it, with the default split policy and forced splits."""
    case = _gpu_case(seqs, 11)
    layout = case.meta.prefill_layout
    tiles = layout.num_rows * 4 // 128 + len(seqs)
    assert prefill_split_count(tiles, 8, layout.max_context_len, torch.cuda.get_device_properties(0)
                               .multi_processor_count) > 1
    ref = reference(case, 128 ** -0.5)
    for splits in (None, 3, 16):
        out = poisoned(case.q)
        prefill_attention(case.q, case.k_cache, case.v_cache, layout, 128 ** -0.5, out, num_splits=splits)
        assert rel_err(out, ref) < BF16_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,heads,kv_heads,head_dim,block_size,tol", [
    (torch.bfloat16, 8, 8, 64, 16, BF16_TOL),
    (torch.bfloat16, 8, 2, 256, 16, BF16_TOL),
    (torch.bfloat16, 32, 1, 128, 32, BF16_TOL),  # one KV head: groups of 32
    (torch.bfloat16, 12, 4, 128, 16, BF16_TOL),  # groups of 3
    (torch.float16, 32, 8, 128, 16, 2e-3),
    (torch.float32, 12, 4, 128, 16, 1e-4),
])
def test_gpu_shapes_and_dtypes(dtype, heads, kv_heads, head_dim, block_size, tol):
    gen = torch.Generator().manual_seed(head_dim + heads)
    seqs = [(int(c), 1) for c in torch.randint(0, 3000, (6,), generator=gen)] + [(700, 300), (0, 257), (33, 2)]
    case = _gpu_case(seqs, 5, heads, kv_heads, head_dim, block_size, dtype)
    out = triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, head_dim ** -0.5,
                                 out=poisoned(case.q))
    assert rel_err(out, reference(case, head_dim ** -0.5)) < tol


@pytest.mark.gpu
def test_gpu_cache_offsets_beyond_int32():
    """Blocks whose element offsets pass 2**31 (a cache of 2.3 G elements per K and V)."""
    first = 2**31 // (16 * 8 * 128) + 1
    case = _gpu_case([(3000, 1), (100, 1), (500, 600)], 11, first_block=first)
    out = triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 128 ** -0.5,
                                 out=poisoned(case.q))
    assert rel_err(out, reference(case, 128 ** -0.5)) < BF16_TOL
