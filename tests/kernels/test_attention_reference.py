"""The paged reference attention equals dense causal attention computed in float64."""

import pytest
import torch
from paged_case import build_step, dense_attention

from adaptive_sarathi.kernels.attention import paged_attention_reference, write_kv_cache


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("heads,kv_heads,block_size", [(4, 4, 4), (8, 2, 16), (6, 3, 8)])
def test_reference_matches_dense(seed, heads, kv_heads, block_size):
    gen = torch.Generator().manual_seed(seed)
    head_dim = 16
    # Decodes with various contexts, a fresh prompt, a chunk continuing a cached prefix.
    seqs = [(int(torch.randint(0, 40, (1,), generator=gen)), 1) for _ in range(3)]
    seqs += [(0, 13), (21, 9), (5, 1)]
    case = build_step(seqs, heads, kv_heads, head_dim, block_size, 64, gen)
    out = paged_attention_reference(case.q, case.k_cache, case.v_cache, case.meta, head_dim ** -0.5)
    for i, (cached, new) in enumerate(seqs):
        row = case.rows[i]
        k, v, positions = case.dense(i)
        expected = dense_attention(case.q[row:row + new], k, v, positions)
        torch.testing.assert_close(out[row:row + new].double(), expected, rtol=1e-5, atol=1e-5)


def test_write_kv_cache_places_each_token_in_its_slot():
    k_cache = torch.zeros(4, 2, 1, 3)
    v_cache = torch.zeros(4, 2, 1, 3)
    k = torch.arange(9.0).view(3, 1, 3)
    write_kv_cache(k, -k, k_cache, v_cache, torch.tensor([5, 0, 7]))
    assert torch.equal(k_cache[2, 1, 0], k[0, 0]) and torch.equal(k_cache[0, 0, 0], k[1, 0])
    assert torch.equal(v_cache[3, 1, 0], -k[2, 0])
    assert k_cache.abs().sum() == k.abs().sum()
