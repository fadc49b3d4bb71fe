"""The two hardware floors measured on the device at hand: copy bandwidth and matmul rate."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaptive_sarathi.engine.profiling.step_timer import time_call


@dataclass(frozen=True)
class Floor:
    rate: float  # bytes/s (bandwidth) or FLOP/s (matmul)
    seconds: float  # median time of one operation
    size: int  # bytes copied or matrix dimension


def copy_bandwidth(device: torch.device, nbytes: int, warmup: int = 5, repeats: int = 20) -> Floor:
    """Device-to-device copy of an `nbytes` buffer; rate counts bytes read plus bytes written.
    Use a buffer far larger than the last-level cache, or the cache is what gets measured."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device, warmup, repeats)
    return Floor(rate=2 * nbytes / timing.device_s, seconds=timing.device_s, size=nbytes)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, warmup: int = 5, repeats: int = 20,
                num_inputs: int = 3) -> Floor:
    """2 n^3 FLOPs per n x n product of random (never zero) matrices in `dtype`, rotating among
    `num_inputs` input pairs so that no pair stays cached between runs."""
    gen = torch.Generator(device=device).manual_seed(0)
    pairs = [(torch.randn(n, n, device=device, dtype=dtype, generator=gen),
              torch.randn(n, n, device=device, dtype=dtype, generator=gen)) for _ in range(num_inputs)]
    out = torch.empty(n, n, device=device, dtype=dtype)
    turn = [0]

    def product() -> None:
        a, b = pairs[turn[0] % num_inputs]
        turn[0] += 1
        torch.matmul(a, b, out=out)

    timing = time_call(product, device, warmup, repeats)
    return Floor(rate=2.0 * n ** 3 / timing.device_s, seconds=timing.device_s, size=n)
