"""The flash-attn adapter equals the reference on a mixed step (only where flash-attn and a GPU are)."""

import pytest
import torch
from paged_case import build_step

from adaptive_sarathi.kernels.attention import paged_attention_reference

pytest.importorskip("flash_attn")


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(2))
def test_flash_attn_matches_reference(seed):
    from adaptive_sarathi.kernels.attention.flash_attn_backend import flash_attn_paged_attention

    gen = torch.Generator().manual_seed(seed)
    seqs = [(700, 1), (255, 1), (0, 1), (0, 300), (513, 200)]
    case = build_step(seqs, 32, 8, 128, 256, 64, gen, dtype=torch.bfloat16, device="cuda")
    out = flash_attn_paged_attention(case.q, case.k_cache, case.v_cache, case.meta, 128 ** -0.5)
    f = lambda x: x.float()  # noqa: E731
    ref = paged_attention_reference(f(case.q), f(case.k_cache), f(case.v_cache), case.meta, 128 ** -0.5)
    assert torch.isfinite(out).all()
    assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2
