"""Random paged-KV steps for attention tests: queries, caches and metadata of one mixed step, and
the dense K/V each sequence sees (for checks that do not go through the block tables)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adaptive_sarathi.kernels.attention import AttentionMetadata, PrefillSpan, write_kv_cache


@dataclass
class PagedCase:
    """One step. seqs[i] = (cached_len, new_len) starts at q row rows[i] and owns blocks tables[i]."""

    q: torch.Tensor  # [T, heads, head_dim]
    k_cache: torch.Tensor  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor
    meta: AttentionMetadata
    seqs: list[tuple[int, int]]
    rows: list[int]
    tables: list[torch.Tensor]  # int64, on the cache's device

    def dense(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys and values [context, kv_heads, head_dim] of sequence i, read slot by slot, and the
        positions of its query rows."""
        cached, new = self.seqs[i]
        pos = torch.arange(cached + new, device=self.k_cache.device)
        block_size = self.k_cache.shape[1]
        blocks, slots = self.tables[i][pos // block_size], pos % block_size
        return self.k_cache[blocks, slots], self.v_cache[blocks, slots], pos[cached:]


def build_step(seqs: list[tuple[int, int]], heads: int, kv_heads: int, head_dim: int, block_size: int,
               num_blocks: int, gen: torch.Generator, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu", first_block: int = 0) -> PagedCase:
    """A step of `seqs` ((cached_len, new_len) each; new_len 1 is a decode), decodes first as the
    engine orders them. Every cache slot holds random values, unused ones included, so a read
    through a wrong block or past a context shows; the new tokens' K/V are written through
    write_kv_cache. `gen` (a CPU generator) draws the block layout and seeds the values; blocks
    come from [first_block, num_blocks)."""
    device = torch.device(device)
    values = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    randn = lambda *shape: torch.randn(*shape, generator=values, dtype=dtype, device=device)  # noqa: E731
    k_cache = randn(num_blocks, block_size, kv_heads, head_dim)
    v_cache = randn(num_blocks, block_size, kv_heads, head_dim)
    free = (first_block + torch.randperm(num_blocks - first_block, generator=gen)).to(device)
    order = sorted(range(len(seqs)), key=lambda i: seqs[i][1] != 1)
    rows, tables = [0] * len(seqs), [torch.empty(0)] * len(seqs)
    slots, prefills, dec_tables, dec_lens = [], [], [], []
    used, row = 0, 0
    for i in order:
        cached, new = seqs[i]
        ctx = cached + new
        n_blocks = -(-ctx // block_size)
        assert used + n_blocks <= len(free), "num_blocks too small for these sequences"
        table = free[used:used + n_blocks]
        used += n_blocks
        pos = torch.arange(cached, ctx, device=device)
        slots.append(table[pos // block_size] * block_size + pos % block_size)
        rows[i], tables[i] = row, table
        if new == 1:
            dec_tables.append(table)
            dec_lens.append(ctx)
        else:
            prefills.append(PrefillSpan(row, row + new, cached, table.to(torch.int32)))
        row += new
    width = max((len(t) for t in dec_tables), default=0)
    dec_table = torch.zeros(len(dec_tables), width, dtype=torch.int32, device=device)
    for j, t in enumerate(dec_tables):
        dec_table[j, :len(t)] = t
    meta = AttentionMetadata(slot_mapping=torch.cat(slots), num_decode_tokens=len(dec_tables),
                             decode_block_tables=dec_table,
                             decode_context_lens=torch.tensor(dec_lens, dtype=torch.int32, device=device),
                             max_decode_context_len=max(dec_lens, default=0), prefills=prefills,
                             block_size=block_size)
    write_kv_cache(randn(row, kv_heads, head_dim), randn(row, kv_heads, head_dim), k_cache, v_cache,
                   meta.slot_mapping)
    return PagedCase(randn(row, heads, head_dim), k_cache, v_cache, meta, seqs, rows, tables)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_positions: torch.Tensor) -> torch.Tensor:
    """q [n, h, d] at q_positions; k/v [ctx, kvh, d]; causal by position; float64."""
    h, kvh = q.shape[1], k.shape[1]
    k = k.repeat_interleave(h // kvh, dim=1).double()
    v = v.repeat_interleave(h // kvh, dim=1).double()
    scores = torch.einsum("nhd,chd->hnc", q.double(), k) / math.sqrt(q.shape[-1])
    mask = torch.arange(k.shape[0], device=k.device)[None, :] <= q_positions[:, None]
    scores = scores.masked_fill(~mask[None], float("-inf"))
    return torch.einsum("hnc,chd->nhd", scores.softmax(-1), v)
