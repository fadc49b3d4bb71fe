"""The tensor-parallel group one rank belongs to: its rank, the group size, the device group
(NCCL on CUDA, gloo on the CPU) for activations and a gloo CPU group for control messages."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TensorParallelGroup:
    """Handles of an initialized process group. device_group carries the model's all-reduces and
    the logits gather; cpu_group carries pickled step plans (broadcast_object_list)."""

    rank: int
    size: int
    device: torch.device
    device_group: dist.ProcessGroup
    cpu_group: dist.ProcessGroup

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks in place; returns `x`."""
        dist.all_reduce(x, group=self.device_group)
        return x

    def all_gather_last_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's `x` (same shape on all ranks) along the last dimension, in rank
        order; returns a new tensor."""
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.device_group)
        return torch.cat(parts, dim=-1)
