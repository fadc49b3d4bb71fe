"""Datasheet numbers of the GPUs the roofline model knows, and the name of the device a run used."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the roofline and profile readers load without torch
    import torch


@dataclass(frozen=True)
class GpuSpec:
    """Peak rates of one GPU: dense bf16 matmul FLOP/s, HBM bytes/s, memory bytes; tile_tokens is
    the GEMM tile height in tokens (token counts are padded up to a multiple of it)."""

    name: str
    matmul_flops: float
    memory_bandwidth: float
    memory_bytes: float
    tile_tokens: int = 128


GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec("h100", 989e12, 3.35e12, 80e9),  # SXM5 80 GB
    "h200": GpuSpec("h200", 989e12, 4.8e12, 141e9),
    "a100": GpuSpec("a100", 312e12, 2.0e12, 80e9),  # SXM4 80 GB
    "l40s": GpuSpec("l40s", 362e12, 0.864e12, 48e9),
}


def gpu_spec(name: str) -> GpuSpec:
    """The GPU named `name` (case-insensitive). Raises ValueError listing the known names."""
    spec = GPUS.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown GPU {name!r}: use one of {', '.join(GPUS)}")
    return spec


def device_name(device: torch.device) -> str:
    """The GPU's name (torch's), or the CPU's for CPU runs: the `gpu` tag of profiles and step logs."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"
