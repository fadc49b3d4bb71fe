"""How a Llama-family model splits over `size` tensor-parallel ranks (Megatron style).

Column-parallel (output rows split): q, k, v projections by heads, gate and up by intermediate
columns, the LM head and the embedding table by vocabulary rows. Row-parallel (input columns
split, outputs summed by an all-reduce): o_proj by query heads, down_proj by intermediate columns.
Norms are replicated. KV heads split across ranks when num_kv_heads >= size; with fewer KV heads
than ranks each rank holds the one KV head its query heads read (heads replicated).

Fused parameters (qkv_proj = [q; k; v], gate_up_proj = [gate; up]) are sharded per component,
so a rank's qkv_proj is [q_r; k_r; v_r], the layout the unsharded Attention code expects.
The vocabulary is padded up to a multiple of `size` (zero rows, logits trimmed after the gather).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from adaptive_sarathi.engine.model.config import ModelConfig


def valid_tensor_parallel_sizes(config: ModelConfig) -> list[int]:
    """Every size that splits the model's heads, KV heads and intermediate size evenly."""
    return [n for n in range(1, config.num_heads + 1) if _divides(config, n)]


def _divides(c: ModelConfig, n: int) -> bool:
    kv_ok = c.num_kv_heads % n == 0 if c.num_kv_heads >= n else n % c.num_kv_heads == 0
    return c.num_heads % n == 0 and kv_ok and c.intermediate_size % n == 0


def check_tensor_parallel_size(config: ModelConfig, size: int) -> None:
    """Raise ValueError naming tensor_parallel_size, the model's head counts and the valid sizes
    when `size` cannot split `config`; return None when it can."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"tensor_parallel_size={size!r} is invalid: use an integer >= 1")
    if not _divides(config, size):
        valid = ", ".join(map(str, valid_tensor_parallel_sizes(config)))
        raise ValueError(
            f"tensor_parallel_size={size} cannot split {config.name}: it has num_heads={config.num_heads}, "
            f"num_kv_heads={config.num_kv_heads}, intermediate_size={config.intermediate_size} (the size must "
            f"divide the heads and the intermediate size, and divide or be a multiple of the KV heads); "
            f"valid sizes: {valid}")


@dataclass(frozen=True)
class ShardSpec:
    """Rank `rank` of `size` for the full model `config`. Pure slicing arithmetic: returns new
    views/tensors, mutates nothing."""

    config: ModelConfig
    rank: int
    size: int

    def __post_init__(self) -> None:
        check_tensor_parallel_size(self.config, self.size)
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank={self.rank} is outside [0, {self.size})")

    # -- per-rank sizes ---------------------------------------------------------------------------

    @property
    def num_heads(self) -> int:
        return self.config.num_heads // self.size

    @property
    def num_kv_heads(self) -> int:
        return max(1, self.config.num_kv_heads // self.size)

    @property
    def kv_head_start(self) -> int:
        c = self.config
        if c.num_kv_heads >= self.size:
            return self.rank * self.num_kv_heads
        # Fewer KV heads than ranks: query head j reads KV head j // (heads per KV head).
        return self.rank * self.num_heads // (c.num_heads // c.num_kv_heads)

    @property
    def intermediate_size(self) -> int:
        return self.config.intermediate_size // self.size

    @property
    def vocab_shard(self) -> int:
        return -(-self.config.vocab_size // self.size)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_shard

    def local_config(self) -> ModelConfig:
        """The config of this rank's slice: the unsharded model code built from it has exactly the
        rank's parameter shapes (and its KV cache holds the rank's KV heads)."""
        return dataclasses.replace(self.config, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                                   intermediate_size=self.intermediate_size, vocab_size=self.vocab_shard)

    # -- slices of full tensors ---------------------------------------------------------------------

    def _q(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        d = self.config.head_dim
        return t.narrow(dim, self.rank * self.num_heads * d, self.num_heads * d)

    def _kv(self, t: torch.Tensor) -> torch.Tensor:
        d = self.config.head_dim
        return t.narrow(0, self.kv_head_start * d, self.num_kv_heads * d)

    def _inter(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        return t.narrow(dim, self.rank * self.intermediate_size, self.intermediate_size)

    def _vocab(self, t: torch.Tensor) -> torch.Tensor:
        stop = min(self.vocab_start + self.vocab_shard, self.config.vocab_size)
        rows = t[self.vocab_start:stop]
        if rows.shape[0] == self.vocab_shard:
            return rows
        padded = t.new_zeros((self.vocab_shard,) + tuple(t.shape[1:]))
        padded[:rows.shape[0]] = rows
        return padded

    def shard_hf(self, hf_name: str, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a Hugging Face-named full tensor (q_proj, k_proj, ..., lm_head);
        replicated tensors (norms) come back unchanged."""
        name = hf_name.removesuffix(".weight").removesuffix(".bias")
        if name.endswith("q_proj"):
            return self._q(tensor)
        if name.endswith("k_proj") or name.endswith("v_proj"):
            return self._kv(tensor)
        if name.endswith("gate_proj") or name.endswith("up_proj"):
            return self._inter(tensor)
        if name.endswith("o_proj"):
            return self._q(tensor, dim=1)
        if name.endswith("down_proj"):
            return self._inter(tensor, dim=1)
        if name.endswith("embed_tokens") or name.endswith("lm_head"):
            return self._vocab(tensor)
        return tensor

    def full_shape(self, name: str, local: torch.Tensor) -> tuple[int, ...]:
        """Shape of our (fused) parameter `name` in the unsharded model, given the rank's `local`."""
        c = self.config
        q, kv, h = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_size
        if "qkv_proj" in name:
            return (q + 2 * kv,) + tuple(local.shape[1:])
        if "gate_up_proj" in name:
            return (2 * c.intermediate_size, h)
        if "o_proj" in name:
            return (h, q)
        if "down_proj" in name:
            return (h, c.intermediate_size)
        if name.startswith("embed_tokens") or name.startswith("lm_head"):
            return (c.vocab_size, h)
        return tuple(local.shape)

    def shard_param(self, name: str, full: torch.Tensor) -> torch.Tensor:
        """This rank's slice of our (fused) parameter `name` given its full unsharded value."""
        c = self.config
        if "qkv_proj" in name:
            q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
            wq, wk, wv = full.split([q, kv, kv])
            return torch.cat([self._q(wq), self._kv(wk), self._kv(wv)])
        if "gate_up_proj" in name:
            gate, up = full.split(c.intermediate_size)
            return torch.cat([self._inter(gate), self._inter(up)])
        for part in ("o_proj", "down_proj", "embed_tokens", "lm_head"):
            if part in name:
                return self.shard_hf(part, full)
        return full
