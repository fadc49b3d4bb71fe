"""The device-split prefill kernel equals the plain-torch reference, splits where split_plan says
(and only there), and gives the same result for a CUDA graph's padded layout.

Without a GPU the kernels run in Triton's interpreter (conftest.py) at small sizes, with small
waves: each program costs milliseconds there. The `gpu` tests run llama-3-8b's shapes.
"""

import pytest
import torch
from paged_case import build_step

from adaptive_sarathi.kernels.attention import paged_attention_reference
from adaptive_sarathi.kernels.attention.metadata import PrefillLayout

pytest.importorskip("triton")

from adaptive_sarathi.kernels.attention import triton_prefill_split  # noqa: E402
from adaptive_sarathi.kernels.attention.triton_backend import triton_paged_attention  # noqa: E402
from adaptive_sarathi.kernels.attention.triton_prefill import PrefillConfig  # noqa: E402
from adaptive_sarathi.kernels.attention.triton_prefill_split import (  # noqa: E402
    prefill_attention_device_split,
    scratch_elements,
    split_plan,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TINY = PrefillConfig(block_m=16, block_n=16, num_warps=4, num_stages=2)
WIDE = PrefillConfig(block_m=16, block_n=32, num_warps=4, num_stages=2)  # a key tile spans several blocks


def poisoned(q: torch.Tensor) -> torch.Tensor:
    return torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)


def reference(case, scale: float) -> torch.Tensor:
    f = lambda x: x.float()  # noqa: E731
    return paged_attention_reference(f(case.q), f(case.k_cache), f(case.v_cache), case.meta, scale)


def prefill_rows(case) -> slice:
    return slice(case.meta.num_decode_tokens, case.q.shape[0])


def run(case, scale, config, wave, scratch=None, layout=None, **kw) -> torch.Tensor:
    out = poisoned(case.q)
    prefill_attention_device_split(case.q, case.k_cache, case.v_cache, layout or case.meta.prefill_layout, scale,
                                   out, config=config, wave=wave, min_partition=16, scratch=scratch, **kw)
    return out


def written_slots(scratch: torch.Tensor, wave: int, config: PrefillConfig, head_dim: int) -> set[int]:
    """The scratch slots (programs) whose max row holds anything but the NaN it started as."""
    maxes = scratch[wave * config.block_m * head_dim:][:wave * config.block_m].view(wave, config.block_m)
    return {int(i) for i in torch.nonzero(~torch.isnan(maxes).all(1)).flatten()}


@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size,config", [
    (4, 4, 16, 4, WIDE),  # no GQA; key tiles of 8 blocks
    (8, 2, 16, 16, TINY),  # groups of 4, one block a key tile
    (6, 2, 16, 32, TINY),  # groups of 3 (tiles split tokens unevenly); two key tiles a block
])
def test_matches_reference_and_splits_as_planned(heads, kv_heads, head_dim, block_size, config):
    """Chunks after long, short and no prefixes, a decode beside them; the parts written to the
    scratch are exactly those split_plan predicts (one slot per program of a row tile with more
    than one part)."""
    gen = torch.Generator().manual_seed(heads * block_size)
    seqs = [(int(torch.randint(70, 140, (1,), generator=gen)), 5), (0, 9), (17, 3), (3, 1)]
    case = build_step(seqs, heads, kv_heads, head_dim, block_size, 256, gen, device=DEVICE)
    ref, rows = reference(case, head_dim ** -0.5), prefill_rows(case)
    layout = case.meta.prefill_layout
    lens, starts = layout.q_lens.tolist(), layout.start_positions.tolist()
    for wave in (1, 12, 40):
        scratch = torch.full((scratch_elements(wave, config, head_dim),), float("nan"), device=DEVICE)
        out = run(case, head_dim ** -0.5, config, wave, scratch)
        torch.testing.assert_close(out[rows], ref[rows], rtol=1e-4, atol=1e-4)
        splits, plan = split_plan(lens, starts, heads // kv_heads, kv_heads, config, wave, min_partition=16)
        expected = {(n * kv_heads + h) * splits + s for n, (_, _, parts) in enumerate(plan) if parts > 1
                    for h in range(kv_heads) for s in range(parts)}
        assert written_slots(scratch, wave, config, head_dim) == expected
    assert expected, "the largest wave must split the chunk after the long prefix"


def test_max_splits_and_a_prefix_of_exactly_whole_tiles():
    """A row tile of one token whose shared keys end exactly at a key-tile edge (87 + 9 = 96: an
    empty band), more splits wanted than allowed, and a fp16 cache."""
    gen = torch.Generator().manual_seed(7)
    case = build_step([(87, 9), (160, 40)], 4, 2, 16, 8, 128, gen, dtype=torch.float16, device=DEVICE)
    ref, rows = reference(case, 0.25), prefill_rows(case)
    for max_splits in (1, 3):
        out = run(case, 0.25, TINY, wave=32, max_splits=max_splits)
        torch.testing.assert_close(out[rows].float(), ref[rows], rtol=2e-3, atol=2e-3)


def test_a_band_wider_than_a_part_and_merges_of_several_programs_a_tile():
    """Row tiles of 128 tokens (no GQA) after 50 cached: 3 shared key tiles and 8 in the band, cut
    into 3 parts balanced over all 11 (the middle one gets no keys), merged by 4 programs a tile
    (MERGE_ROWS 32)."""
    gen = torch.Generator().manual_seed(9)
    case = build_step([(50, 120), (300, 130)], 2, 2, 16, 8, 128, gen, device=DEVICE)
    config = PrefillConfig(block_m=128, block_n=16, num_warps=4, num_stages=2)
    splits, plan = split_plan([120, 130], [50, 300], 1, 2, config, wave=24, min_partition=16)
    assert splits == 4 and (0, 0, 3) in plan
    out = run(case, 0.25, config, wave=24)
    torch.testing.assert_close(out, reference(case, 0.25), rtol=1e-4, atol=1e-4)


def test_padded_layout_of_a_cuda_graph():
    """Spare chunks of q_len 0 and a row bound past the real rows, as a mixed graph captures
    them, split and written as the exact layout is."""
    gen = torch.Generator().manual_seed(5)
    case = build_step([(120, 4), (3, 6)], 4, 2, 16, 4, 128, gen, device=DEVICE)
    layout = case.meta.prefill_layout
    pad = lambda t: torch.cat([t, torch.zeros((3, *t.shape[1:]), dtype=t.dtype, device=t.device)])  # noqa: E731
    padded = PrefillLayout(pad(layout.spans.T).T.contiguous(), pad(layout.block_tables),
                           num_rows=layout.num_rows + 40, max_q_len=64, max_context_len=256)
    exact = run(case, 0.25, TINY, wave=10)
    assert torch.equal(run(case, 0.25, TINY, wave=10, layout=padded), exact)
    torch.testing.assert_close(exact, reference(case, 0.25), rtol=1e-4, atol=1e-4)


def test_split_plan_at_llama_shapes():
    """The decision the tests above check the kernel against, at the case it is for: 100 tokens
    (4 row tiles of 128 at GQA 4) after 4096 cached, 8 KV heads, 132 SMs x 2."""
    config = PrefillConfig(block_m=128, block_n=128, num_warps=8, num_stages=3)
    splits, plan = split_plan([100], [4096], 4, 8, config, wave=264)
    assert splits == 8 and [parts for _, _, parts in plan] == [8, 8, 8, 8]
    assert split_plan([100], [0], 4, 8, config, wave=264)[1] == [(0, t, 1) for t in (3, 2, 1, 0)]
    assert split_plan([8192], [0], 4, 8, config, wave=264)[0] == 1  # 256 tiles fill the GPU


def test_tile_by_shape_class(monkeypatch):
    """Layouts of up to SHORT_ROWS rows in bf16/fp16 take SHORT_TILES[head_dim]; longer ones and
    fp32 take triton_prefill's tile."""
    from adaptive_sarathi.kernels.attention.triton_prefill import prefill_config

    marker = PrefillConfig(block_m=64, block_n=64, num_warps=4, num_stages=2)
    monkeypatch.setitem(triton_prefill_split.SHORT_TILES, 128, marker)
    layout = lambda rows: PrefillLayout(torch.zeros(3, 1, dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),  # noqa: E731
                                        num_rows=rows, max_q_len=rows, max_context_len=8192)
    short, long = layout(triton_prefill_split.SHORT_ROWS), layout(triton_prefill_split.SHORT_ROWS + 1)
    assert triton_prefill_split.device_split_config(short, 128, torch.bfloat16) == marker
    assert triton_prefill_split.device_split_config(short, 128, torch.float16) == marker
    assert triton_prefill_split.device_split_config(long, 128, torch.bfloat16) == prefill_config(128, torch.bfloat16)
    assert triton_prefill_split.device_split_config(short, 128, torch.float32) == prefill_config(128, torch.float32)


def test_backend_dispatch_follows_the_threshold(monkeypatch):
    """triton_paged_attention runs the device-split kernel from DEVICE_SPLIT_MIN_CONTEXT on, with
    the same result as the other kernel."""
    gen = torch.Generator().manual_seed(3)
    case = build_step([(40, 3), (0, 5), (9, 1)], 4, 2, 16, 4, 64, gen, device=DEVICE)
    calls = []
    original = triton_prefill_split.prefill_attention_device_split
    monkeypatch.setattr("adaptive_sarathi.kernels.attention.triton_backend.prefill_attention_device_split",
                        lambda *a, **k: (calls.append(1), original(*a, **k, wave=4)))
    monkeypatch.setattr(triton_prefill_split, "DEVICE_SPLIT_MIN_CONTEXT", None)
    off = triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 0.25, out=poisoned(case.q))
    assert not calls
    monkeypatch.setattr(triton_prefill_split, "DEVICE_SPLIT_MIN_CONTEXT", 44)  # the longest context is 43
    triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 0.25, out=poisoned(case.q))
    assert not calls
    monkeypatch.setattr(triton_prefill_split, "DEVICE_SPLIT_MIN_CONTEXT", 43)
    on = triton_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 0.25, out=poisoned(case.q))
    assert calls == [1]
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-5)


def test_rejects_bad_arguments():
    gen = torch.Generator().manual_seed(1)
    case = build_step([(4, 3)], 4, 2, 16, 4, 16, gen, device=DEVICE)
    with pytest.raises(ValueError, match="wave=0"):
        run(case, 0.25, TINY, wave=0)
    with pytest.raises(ValueError, match="scratch must be a contiguous float32"):
        run(case, 0.25, TINY, wave=2, scratch=torch.zeros(8, device=DEVICE))


BF16_TOL = 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("seqs", [[(4096, 100)], [(8192, 100)], [(4096, 100), (8000, 37), (0, 300)],
                                  [(0, 100), (4090, 100), (3, 1)], [(0, 4096)]])
def test_gpu_llama_shapes(seqs):
    """llama-3-8b's shapes in bf16 (32 heads, 8 KV heads, head dim 128, blocks of 16) with the
    default tile and wave: short chunks after long prefixes (split), a long fresh chunk (not)."""
    gen = torch.Generator().manual_seed(11)
    blocks = sum(-(-(c + n) // 16) for c, n in seqs) + 64
    case = build_step(seqs, 32, 8, 128, 16, blocks, gen, dtype=torch.bfloat16, device="cuda")
    ref, rows = reference(case, 128 ** -0.5), prefill_rows(case)
    out = poisoned(case.q)
    prefill_attention_device_split(case.q, case.k_cache, case.v_cache, case.meta.prefill_layout, 128 ** -0.5, out)
    err = ((out[rows].float() - ref[rows]).norm() / ref[rows].norm()).item()
    assert not torch.isnan(out[rows]).any() and err < BF16_TOL
