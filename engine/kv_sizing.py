"""How many KV blocks fit on a device once the model is loaded: the one sizing rule of the engine
factory, the tensor-parallel ranks and the profiler (so a profile covers the shapes the engine can
hold)."""

from __future__ import annotations

import torch

from adaptive_sarathi.engine.model.llama import LlamaForCausalLM
from adaptive_sarathi.engine.model_runner import kv_block_bytes


def kv_capacity_blocks(model: LlamaForCausalLM, block_size: int, device: torch.device, dtype: torch.dtype,
                       gpu_memory_utilization: float = 0.9, cpu_kv_cache_bytes: int = 1 << 30) -> int:
    """KV blocks of `block_size` tokens in `dtype` for `model` on `device`: on CUDA, the free memory
    minus (1 - gpu_memory_utilization) of the card (the rest is left for activations of the
    largest step); on the CPU, cpu_kv_cache_bytes. Reads the device's free memory, changes nothing.
    Returns 0 when not one block fits (callers decide whether that is an error)."""
    per_block = kv_block_bytes(model, block_size, dtype)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        budget = free - (1 - gpu_memory_utilization) * total
    else:
        budget = cpu_kv_cache_bytes
    return max(0, int(budget // per_block))
