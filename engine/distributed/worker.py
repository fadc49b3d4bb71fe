"""The process side of tensor parallelism: joining the group, and the loop of a non-driver rank.

Protocol over the gloo CPU group: rank 0 (the driver) broadcasts (method, args, gather) with
broadcast_object_list; every rank runs RankState.<method>(*args); when `gather` is set the results
are all-gathered (all_gather_object) so the driver sees every rank's. ("stop", ...) ends the loop.
Startup status goes through the rendezvous TCPStore: "joined/<rank>", then "ready/<rank>" or
"error/<rank>" (a traceback), which the driver polls while watching the processes.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist

from adaptive_sarathi.engine.distributed.env import disable_nvlink_multicast
from adaptive_sarathi.engine.distributed.group import TensorParallelGroup
from adaptive_sarathi.engine.distributed.rank_state import RankState, WorkerSpec

STOP = "stop"


def connect_store(spec: WorkerSpec, rank: int, timeout_s: float) -> dist.TCPStore:
    """The rendezvous store: hosted by the driver (rank 0), joined by the others."""
    return dist.TCPStore("127.0.0.1", spec.port, spec.size, is_master=(rank == 0),
                         timeout=timedelta(seconds=timeout_s), wait_for_workers=False)


def init_group(spec: WorkerSpec, rank: int, store: dist.TCPStore) -> TensorParallelGroup:
    """Initialize the default process group (NCCL on CUDA, gloo on the CPU) and a gloo CPU group
    for control messages. Mutates process-global torch.distributed state; every rank calls it."""
    disable_nvlink_multicast()
    device = spec.device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(spec.cpu_threads)
    timeout = timedelta(seconds=spec.collective_timeout_s)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=spec.size, timeout=timeout)
    cpu_group = dist.new_group(backend="gloo", timeout=timeout)
    return TensorParallelGroup(rank=rank, size=spec.size, device=device, device_group=dist.group.WORLD,
                               cpu_group=cpu_group)


def serve_commands(state: RankState) -> None:
    """Run the driver's commands until STOP. Raises what a command raises (the process then exits,
    which the driver sees)."""
    while True:
        message = [None]
        dist.broadcast_object_list(message, src=0, group=state.group.cpu_group)
        method, args, gather = message[0]
        if method == STOP:
            return
        result = getattr(state, method)(*args)
        if gather:
            dist.all_gather_object([None] * state.group.size, result, group=state.group.cpu_group)


def worker_main(index: int, spec: WorkerSpec, startup_timeout_s: float) -> None:
    """Entry point of the spawned process for rank index + 1. Exits 0 after STOP, 1 on failure
    (with the traceback in the store and on stderr)."""
    rank = index + 1
    # Ctrl-C in a terminal reaches the whole process group: the driver decides when workers stop
    # (a server finishes its in-flight requests first), and they stop when it goes away.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    disable_nvlink_multicast()
    store = None
    try:
        store = connect_store(spec, rank, startup_timeout_s)
        store.set(f"joined/{rank}", str(os.getpid()))
        state = RankState(spec, init_group(spec, rank, store))
        store.set(f"ready/{rank}", "ok")
        with torch.inference_mode():
            serve_commands(state)
    except BaseException:  # noqa: BLE001 - reported to the driver, then the process ends
        message = traceback.format_exc()
        print(f"tensor-parallel rank {rank} failed:\n{message}", file=sys.stderr, flush=True)
        if store is not None:
            try:
                store.set(f"error/{rank}", message)
            except Exception:  # noqa: BLE001 - the driver may be gone already
                pass
        os._exit(1)  # skip interpreter teardown: a half-open process group can hang it
    try:
        dist.destroy_process_group()
    finally:
        os._exit(0)
