"""A step's inputs to the GPU in one copy, through pinned memory."""

from __future__ import annotations

import numpy as np
import torch

_ALIGN = 16  # bytes: every tensor starts where any dtype's view of it is aligned


class PinnedStaging:
    """Moves a step's CPU tensors to a CUDA `device` in one non-blocking copy: packs them into a
    pinned host buffer, copies its used part into a device buffer and returns views of it.

    The views are valid until the next `move`, which reuses the device buffer: its copy is queued
    on the current stream after the kernels that read the previous views, so they never see it.
    The host buffer is rewritten only once the previous copy out of it has finished."""

    def __init__(self, device: torch.device):
        self.device = device
        self._host = torch.empty(0, dtype=torch.uint8)
        self._device_buffer = torch.empty(0, dtype=torch.uint8, device=device)
        self._copied: torch.cuda.Event | None = None

    def move(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Device copies of `tensors` (CPU tensors), in order, same dtypes and shapes."""
        arrays = [np.ascontiguousarray(t.numpy()).reshape(-1).view(np.uint8) for t in tensors]
        offsets = np.cumsum([0] + [-(-a.size // _ALIGN) * _ALIGN for a in arrays]).tolist()
        total = offsets[-1]
        if self._copied is not None:
            self._copied.synchronize()  # the last copy has read the host buffer
        self._reserve(total)
        host = self._host.numpy()
        for array, start in zip(arrays, offsets):
            host[start:start + array.size] = array
        on_device = self._device_buffer[:total]
        on_device.copy_(self._host[:total], non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return [on_device[start:start + array.size].view(t.dtype).view(t.shape)
                for t, array, start in zip(tensors, arrays, offsets)]

    def _reserve(self, num_bytes: int) -> None:
        if num_bytes <= self._host.numel():
            return
        size = max(num_bytes, 2 * self._host.numel(), 1 << 16)
        # Normal tensors even when the first step runs in inference mode: inference tensors could
        # not be written by a later move made outside it.
        with torch.inference_mode(False):
            self._host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
            self._device_buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
