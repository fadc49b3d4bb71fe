"""What every tensor-parallel rank holds (its model slice and current ModelRunner), and the
operations the driver runs on all ranks at once. Each public method is a collective: the driver
calls it through TensorParallelSession.call, which makes every rank call it with the same
arguments in the same order."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from adaptive_sarathi.engine.batch import SampledTokens, ScheduledBatch
from adaptive_sarathi.engine.distributed.group import TensorParallelGroup
from adaptive_sarathi.engine.kv_sizing import kv_capacity_blocks
from adaptive_sarathi.engine.loaders import ModelSource
from adaptive_sarathi.engine.model.build import build_model
from adaptive_sarathi.engine.model_runner import ModelRunner
from adaptive_sarathi.kernels.attention.backends import select_attention

if TYPE_CHECKING:
    from adaptive_sarathi.engine.profiling.step_timer import Timing


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a rank needs to build its slice; pickled to the spawned workers."""

    source: ModelSource
    size: int
    device_type: str  # "cuda" or "cpu"
    first_device_index: int  # rank r uses cuda:(first_device_index + r)
    dtype: torch.dtype
    max_positions: int | None
    attention_backend: str
    port: int
    collective_timeout_s: float
    cpu_threads: int

    def device(self, rank: int) -> torch.device:
        if self.device_type == "cuda":
            return torch.device("cuda", self.first_device_index + rank)
        return torch.device("cpu")


class RankState:
    """One rank's model slice and runner. Owns the KV cache of its runner. With group None it is
    the whole model in this process (the TP=1 baseline of benchmarks, same code path)."""

    def __init__(self, spec: WorkerSpec, group: TensorParallelGroup | None):
        self.spec, self.group = spec, group
        self.rank = group.rank if group is not None else 0
        self.device = group.device if group is not None else spec.device(0)
        self.model = build_model(spec.source, self.device, spec.dtype, spec.max_positions, tp=group)
        self.attention = select_attention(self.device, spec.attention_backend)
        self.runner: ModelRunner | None = None

    def kv_capacity(self, block_size: int, gpu_memory_utilization: float, cpu_kv_cache_bytes: int) -> int:
        """KV blocks this rank could hold beside its slice (the engine factory's rule)."""
        return kv_capacity_blocks(self.model, block_size, self.device, self.spec.dtype, gpu_memory_utilization,
                                  cpu_kv_cache_bytes)

    def make_runner(self, num_blocks: int, block_size: int, seed: int, random_fill: bool = False) -> None:
        """Replace the runner by one with a fresh KV cache of `num_blocks` blocks (the old cache is
        freed first). random_fill: seeded normal values, for timing (never time attention over zeros)."""
        self.release()
        self.runner = ModelRunner(self.model, num_blocks, block_size, self.attention, seed=seed)
        if random_fill:
            gen = torch.Generator(device=self.device).manual_seed(seed + self.rank)
            for k_cache, v_cache in self.runner.kv_caches:
                k_cache.normal_(generator=gen)
                v_cache.normal_(generator=gen)

    def execute(self, batch: ScheduledBatch) -> SampledTokens:
        """ModelRunner.execute on this rank's slice. Every rank samples from the same gathered
        logits with identically seeded generators; the driver's tokens are the ones used."""
        return self.runner.execute(batch)

    def logits_for(self, batch: ScheduledBatch) -> torch.Tensor:
        """Full-vocabulary float32 logits of the batch's sampling rows, on the CPU (a new tensor)."""
        return self.runner.logits_for(batch).cpu()

    def time_forward(self, batch: ScheduledBatch, warmup: int, repeats: int) -> Timing:
        """Timing of the forward and LM head (with the logits gather) on inputs already on the
        device; the runner's KV cache is written, as in a real step."""
        # Imported here: only the profiler calls the timing collectives, and the engine's core
        # (which serving loads) does not depend on the profiling package.
        from adaptive_sarathi.engine.profiling.step_timer import time_call

        return time_call(self.runner.prepared_forward(batch), self.device, warmup, repeats)

    def time_all_reduce(self, num_tokens: int, calls: int, warmup: int, repeats: int) -> Timing:
        """Timing of `calls` back-to-back all-reduces of a [num_tokens, hidden] activation in the
        model's dtype: a step's communication measured on its own. Needs a group."""
        from adaptive_sarathi.engine.profiling.step_timer import time_call

        hidden = self.model.full_config.hidden_size
        # Zeros stay zeros however often they are summed (random values would overflow to inf);
        # the cost of a ring all-reduce does not depend on the values.
        x = torch.zeros(num_tokens, hidden, device=self.device, dtype=self.spec.dtype)

        def reduce_all() -> None:
            for _ in range(calls):
                self.group.all_reduce(x)

        return time_call(reduce_all, self.device, warmup, repeats)

    def release(self) -> None:
        """Drop the runner and its KV cache (and the memory the allocator keeps for it)."""
        self.runner = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
