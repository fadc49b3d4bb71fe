"""Timing a callable on a device: warm-up, then the median of repeated runs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Timing:
    """Medians over `runs` runs, in seconds. wall_s: host time from an idle device to the device
    done again (what a synchronizing caller waits). device_s: time between CUDA events recorded
    around the call (equal to wall_s on the CPU)."""

    wall_s: float
    device_s: float
    runs: int


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5) -> Timing:
    """Run `fn` `warmup` times untimed (compilation, autotuning, allocator growth), then `repeats`
    times timed, synchronizing the device before and after each run. Returns the medians."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats!r} is invalid: use an integer >= 1")
    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    walls: list[float] = []
    devices: list[float] = []
    stream = torch.cuda.current_stream(device) if cuda else None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record(stream)
            fn()
            end.record(stream)
            torch.cuda.synchronize(device)
            walls.append(time.perf_counter() - t0)
            devices.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
            devices.append(walls[-1])
    return Timing(wall_s=statistics.median(walls), device_s=statistics.median(devices), runs=repeats)
