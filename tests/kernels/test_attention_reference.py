"""The paged reference attention equals dense causal attention computed in float64."""

import math

import pytest
import torch

from adaptive_sarathi.kernels.attention import AttentionMetadata, PrefillSpan, paged_attention_reference, write_kv_cache


def dense_attention(q, k, v, q_positions):
    """q [n, h, d] at q_positions; k/v [ctx, kvh, d]; causal by position; float64."""
    h, kvh = q.shape[1], k.shape[1]
    k = k.repeat_interleave(h // kvh, dim=1).double()
    v = v.repeat_interleave(h // kvh, dim=1).double()
    scores = torch.einsum("nhd,chd->hnc", q.double(), k) / math.sqrt(q.shape[-1])
    mask = torch.arange(k.shape[0])[None, :] <= q_positions[:, None]
    scores = scores.masked_fill(~mask[None], float("-inf"))
    return torch.einsum("hnc,chd->nhd", scores.softmax(-1), v)


def build_step(seqs, heads, kv_heads, head_dim, block_size, num_blocks, gen):
    """seqs: list of (cached_len, new_len). Returns q, caches, metadata and the dense K/V per seq."""
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen)  # garbage elsewhere
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen)
    free = torch.randperm(num_blocks, generator=gen).tolist()
    order = sorted(range(len(seqs)), key=lambda i: seqs[i][1] != 1)  # decodes first
    qs, slots, prefills, dec_tables, dec_lens, dense = [], [], [], [], [], {}
    new_k, new_v = [], []
    row = 0
    for i in order:
        cached, new = seqs[i]
        ctx = cached + new
        table = [free.pop() for _ in range(-(-ctx // block_size))]
        k = torch.randn(ctx, kv_heads, head_dim, generator=gen)
        v = torch.randn(ctx, kv_heads, head_dim, generator=gen)
        for p in range(cached):  # the prefix is already in the cache
            k_cache[table[p // block_size], p % block_size] = k[p]
            v_cache[table[p // block_size], p % block_size] = v[p]
        slots += [table[p // block_size] * block_size + p % block_size for p in range(cached, ctx)]
        new_k.append(k[cached:])
        new_v.append(v[cached:])
        qs.append(torch.randn(new, heads, head_dim, generator=gen))
        dense[i] = (row, k, v, torch.arange(cached, ctx))
        if new == 1:
            dec_tables.append(table)
            dec_lens.append(ctx)
        else:
            prefills.append(PrefillSpan(row, row + new, cached, torch.tensor(table, dtype=torch.int32)))
        row += new
    width = max((len(t) for t in dec_tables), default=0)
    tables = torch.zeros(len(dec_tables), width, dtype=torch.int32)
    for j, t in enumerate(dec_tables):
        tables[j, :len(t)] = torch.tensor(t)
    meta = AttentionMetadata(torch.tensor(slots), len(dec_tables), tables, torch.tensor(dec_lens, dtype=torch.int32),
                             max(dec_lens, default=0), prefills, block_size)
    write_kv_cache(torch.cat(new_k), torch.cat(new_v), k_cache, v_cache, meta.slot_mapping)
    return torch.cat(qs), k_cache, v_cache, meta, dense


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("heads,kv_heads,block_size", [(4, 4, 4), (8, 2, 16), (6, 3, 8)])
def test_reference_matches_dense(seed, heads, kv_heads, block_size):
    gen = torch.Generator().manual_seed(seed)
    head_dim = 16
    # Decodes with various contexts, a fresh prompt, a chunk continuing a cached prefix.
    seqs = [(int(torch.randint(0, 40, (1,), generator=gen)), 1) for _ in range(3)]
    seqs += [(0, 13), (21, 9), (5, 1)]
    q, k_cache, v_cache, meta, dense = build_step(seqs, heads, kv_heads, head_dim, block_size, 64, gen)
    out = paged_attention_reference(q, k_cache, v_cache, meta, head_dim ** -0.5)
    for i, (cached, new) in enumerate(seqs):
        row, k, v, positions = dense[i]
        expected = dense_attention(q[row:row + new], k, v, positions)
        torch.testing.assert_close(out[row:row + new].double(), expected, rtol=1e-5, atol=1e-5)


def test_write_kv_cache_places_each_token_in_its_slot():
    k_cache = torch.zeros(4, 2, 1, 3)
    v_cache = torch.zeros(4, 2, 1, 3)
    k = torch.arange(9.0).view(3, 1, 3)
    write_kv_cache(k, -k, k_cache, v_cache, torch.tensor([5, 0, 7]))
    assert torch.equal(k_cache[2, 1, 0], k[0, 0]) and torch.equal(k_cache[0, 0, 0], k[1, 0])
    assert torch.equal(v_cache[3, 1, 0], -k[2, 0])
    assert k_cache.abs().sum() == k.abs().sum()
