"""A ModelRunner whose KV cache is sized on demand, for measuring steps of many shapes on one model."""

from __future__ import annotations

import gc
import random

import torch

from adaptive_sarathi.engine.model.llama import AttentionFn, LlamaForCausalLM
from adaptive_sarathi.engine.model_runner import ModelRunner


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` says the device ran out of memory: torch's own error, or a library's failed
    allocation (cuBLAS reports its workspace failures as a plain RuntimeError)."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in str(err) or "ALLOC_FAILED" in str(err)))


class GrowingKvPool:
    """Owns at most one runner at a time and replaces it by a larger one when a step needs more KV
    blocks than it has. Subclasses say how a runner of N blocks is made and freed.

    Growth at least doubles the cache (up to `capacity_blocks`), so a sweep in increasing order of
    KV need reallocates only a few times; steps that need little KV (long prefill chunks, whose
    activations are large) therefore run while the cache is still small.
    """

    def __init__(self, block_size: int, capacity_blocks: int, seed: int = 0):
        self.block_size = block_size
        self.capacity_blocks = capacity_blocks
        self.seed = seed
        self.rng = random.Random(seed)
        self.current = None  # the runner; it has .num_blocks

    @property
    def num_blocks(self) -> int:
        return self.current.num_blocks if self.current is not None else 0

    def runner(self, num_blocks: int):
        """A runner with at least `num_blocks` KV blocks. Raises ValueError beyond capacity_blocks
        and torch.OutOfMemoryError when the device cannot hold the cache (the old one is freed)."""
        if num_blocks > self.capacity_blocks:
            raise ValueError(f"{num_blocks} KV blocks asked for, capacity is {self.capacity_blocks}")
        if self.current is None or self.current.num_blocks < num_blocks:
            self.resize(min(self.capacity_blocks, max(num_blocks, 2 * self.num_blocks)))
        return self.current

    def resize(self, num_blocks: int) -> None:
        """Replace the runner by one of exactly `num_blocks` blocks (freeing the old cache first)."""
        self.release()
        self.current = self._new_runner(num_blocks)

    def scattered_blocks(self, count: int) -> list[int]:
        """`count` distinct block ids drawn at random from the current cache, as a cache in use
        for a while hands them out."""
        return self.rng.sample(range(self.num_blocks), count)

    def release(self) -> None:
        """Free the cache."""
        self.current = None

    def _new_runner(self, num_blocks: int):
        raise NotImplementedError


class KvPool(GrowingKvPool):
    """A GrowingKvPool of ModelRunners over `model` on its device. New caches are filled with
    seeded random values: never time attention over zeros."""

    def __init__(self, model: LlamaForCausalLM, attention: AttentionFn, block_size: int, capacity_blocks: int,
                 seed: int = 0):
        super().__init__(block_size, capacity_blocks, seed)
        self.model, self.attention = model, attention

    def _new_runner(self, num_blocks: int) -> ModelRunner:
        runner = ModelRunner(self.model, num_blocks, self.block_size, self.attention, seed=self.seed)
        gen = torch.Generator(device=runner.device).manual_seed(self.seed)
        for k_cache, v_cache in runner.kv_caches:
            k_cache.normal_(generator=gen)
            v_cache.normal_(generator=gen)
        return runner

    def release(self) -> None:
        """Free the cache (and the device memory the allocator keeps for it)."""
        super().release()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
