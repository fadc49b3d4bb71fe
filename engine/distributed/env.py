"""Process environment for tensor-parallel runs: NVLink multicast off, a free rendezvous port,
CPU threads per rank."""

from __future__ import annotations

import os
import socket

# NVLink SHARP (multicast) all-reduce paths are off everywhere in this project: the machines this
# engine is measured on lend GPUs whose fabric manager does not provide multicast objects, and a
# run that half-enables them fails at the first collective. Set before init_process_group, in the
# parent before spawning (children inherit the environment) and again in each worker.
NVLINK_MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def disable_nvlink_multicast() -> None:
    """Force the NVLink-multicast switches off in os.environ (mutates the process environment)."""
    os.environ.update(NVLINK_MULTICAST_OFF)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the rendezvous store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_threads_per_rank(world_size: int) -> int:
    """CPU threads each rank of a CPU (gloo) run should use, so ranks do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // world_size)
