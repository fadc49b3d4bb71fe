"""Layers that communicate: the row-parallel linear (o_proj, down_proj) and the vocab-parallel
embedding. Both adopt the Parameters of the unsharded layer they replace, so parameter names, ties
(embed_tokens <-> lm_head) and weight loading stay those of the plain model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptive_sarathi.engine.distributed.group import TensorParallelGroup


class RowParallelLinear(nn.Module):
    """y = all_reduce(x_r @ W_r^T) (+ bias once, after the sum): the rank holds the input columns
    of its shard, so partial products sum to the full output on every rank."""

    def __init__(self, linear: nn.Linear, group: TensorParallelGroup):
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.group.all_reduce(F.linear(x, self.weight))
        return out if self.bias is None else out + self.bias


class VocabParallelEmbedding(nn.Module):
    """Rows [vocab_start, vocab_start + shard) of the embedding table: ids outside the rank's
    range look up zeros, and the all-reduce leaves each id's row on every rank."""

    def __init__(self, embedding: nn.Embedding, vocab_start: int, group: TensorParallelGroup):
        super().__init__()
        self.weight = embedding.weight
        self.vocab_start = vocab_start
        self.group = group

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.weight.shape[0])
        rows = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.group.all_reduce(rows.masked_fill(outside.unsqueeze(-1), 0))
