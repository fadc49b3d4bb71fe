"""The driver side of tensor parallelism: spawn one worker process per extra rank, join them in a
process group as rank 0, build this rank's slice, and run collective calls on every rank.

The driver is rank 0 in the calling process (it holds GPU `first_device_index`); the scheduler,
the controller and the tokenizer live only here. Each call broadcasts (method, args) to the
workers over the gloo CPU group, then runs the method locally; the model's own collectives (the
all-reduces and the logits gather) keep the ranks in step inside it.

Failure handling: startup waits poll the store while watching the worker processes, so a worker
that dies while loading fails the start at once with its traceback. During serving a dead worker
is noticed before each call; a worker that dies inside a step breaks the driver's next collective
(gloo: connection closed at once; NCCL: a watchdog thread aborts the group, else the collective
timeout fires), and the call raises RuntimeError naming the rank. shutdown() stops the workers
(STOP, then terminate/kill after a grace period) and destroys the process group; it also runs at
interpreter exit.
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adaptive_sarathi.engine.distributed.env import cpu_threads_per_rank, disable_nvlink_multicast, free_port
from adaptive_sarathi.engine.distributed.rank_state import RankState, WorkerSpec
from adaptive_sarathi.engine.distributed.sharding import check_tensor_parallel_size
from adaptive_sarathi.engine.distributed.worker import STOP, connect_store, init_group, worker_main
from adaptive_sarathi.engine.loaders import ModelSource

DEFAULT_STARTUP_TIMEOUT_S = 900.0  # loading a large checkpoint from a slow disk
DEFAULT_COLLECTIVE_TIMEOUT_S = 300.0  # first steps compile kernels on every rank before collectives meet


class TensorParallelSession:
    """Rank 0 of a tensor-parallel group of `size` processes. Not thread-safe: one thread calls.
    Only one session may exist per process (torch.distributed's default group is process-global).
    Raises ValueError for a size the model or the host cannot take, RuntimeError when a worker
    fails to start (its traceback in the message)."""

    def __init__(self, source: ModelSource, size: int, device: torch.device, dtype: torch.dtype,
                 max_positions: int | None = None, attention_backend: str = "auto",
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
                 collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S):
        check_tensor_parallel_size(source.config, size)
        if size < 2:
            raise ValueError(f"tensor_parallel_size={size}: a session needs 2 or more ranks; use the plain runner")
        device = torch.device(device)
        first = device.index or 0
        if device.type == "cuda" and torch.cuda.device_count() < first + size:
            raise ValueError(f"tensor_parallel_size={size} needs {size} GPUs from cuda:{first}, this host has "
                             f"{torch.cuda.device_count()}: lower tensor_parallel_size")
        if dist.is_initialized():
            raise ValueError("tensor_parallel_size > 1: this process already belongs to a torch.distributed group "
                             "(another tensor-parallel engine, or torchrun); close it first")
        disable_nvlink_multicast()  # before spawning: the workers inherit the environment
        self.size = size
        self.config = source.config
        self.spec = WorkerSpec(source=source, size=size, device_type=device.type, first_device_index=first,
                               dtype=dtype, max_positions=max_positions, attention_backend=attention_backend,
                               port=free_port(), collective_timeout_s=collective_timeout_s,
                               cpu_threads=cpu_threads_per_rank(size))
        self._closed = False
        self._broken: str | None = None
        self.store = connect_store(self.spec, 0, startup_timeout_s)
        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=worker_main, args=(i, self.spec, startup_timeout_s), daemon=True,
                                  name=f"tp-rank-{i + 1}") for i in range(size - 1)]
        for p in self.procs:
            p.start()
        atexit.register(self.shutdown)
        try:
            deadline = time.monotonic() + startup_timeout_s
            self._wait_for("joined", deadline)
            self.group = init_group(self.spec, 0, self.store)
            self.state = RankState(self.spec, self.group)
            self._wait_for("ready", deadline)
        except BaseException:
            self._broken = "startup failed"
            self.shutdown()
            raise
        self._watchdog = threading.Thread(target=self._watch, name="tp-watchdog", daemon=True)
        self._watchdog.start()

    # -- calls ----------------------------------------------------------------------------------

    def call(self, method: str, *args, gather: bool = False):
        """Run RankState.<method>(*args) on every rank; returns rank 0's result, or every rank's
        (a list in rank order) when `gather`. Raises RuntimeError (the session then shuts down)
        when a worker has died or a collective fails."""
        if self._closed:
            raise RuntimeError(f"the tensor-parallel session is closed ({self._broken or 'shut down'})")
        try:
            self._raise_if_worker_died()
            dist.broadcast_object_list([(method, args, gather)], src=0, group=self.group.cpu_group)
            result = getattr(self.state, method)(*args)
            if gather:
                results = [None] * self.size
                dist.all_gather_object(results, result, group=self.group.cpu_group)
                return results
            return result
        except Exception as err:
            reason = self._worker_errors() or str(err)
            self._broken = reason
            self.shutdown()
            raise RuntimeError(f"tensor-parallel step failed: {reason}") from err

    # -- failures -------------------------------------------------------------------------------

    def _wait_for(self, what: str, deadline: float) -> None:
        keys = [f"{what}/{r}" for r in range(1, self.size)]
        while not self.store.check(keys):
            self._raise_if_worker_died()
            if time.monotonic() > deadline:
                raise RuntimeError(f"tensor-parallel workers not {what} before the startup timeout")
            time.sleep(0.05)

    def _raise_if_worker_died(self) -> None:
        dead = [(r + 1, p.exitcode) for r, p in enumerate(self.procs) if not p.is_alive()]
        if dead:
            detail = self._worker_errors() or ", ".join(f"rank {r} exited with code {code}" for r, code in dead)
            self._broken = detail
            raise RuntimeError(f"tensor-parallel worker died: {detail}")

    def _worker_errors(self) -> str:
        errors = []
        for r in range(1, self.size):
            key = f"error/{r}"
            try:
                if self.store.check([key]):
                    errors.append(f"rank {r}: {self.store.get(key).decode(errors='replace').strip()}")
            except Exception:  # noqa: BLE001 - the store may be gone in a broken session
                pass
        return "\n".join(errors)

    def _watch(self) -> None:
        """Abort the NCCL group when a worker dies, so that a driver blocked in a collective on a
        dead peer errors out instead of waiting for the collective timeout."""
        while not self._closed:
            if any(not p.is_alive() for p in self.procs):
                if self._closed:
                    return
                print("adaptive-sarathi: a tensor-parallel worker died", file=sys.stderr, flush=True)
                if self.spec.device_type == "cuda":
                    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
                    if abort is not None:
                        try:
                            abort()
                        except Exception:  # noqa: BLE001 - best effort; the timeout remains
                            pass
                return
            time.sleep(0.5)

    # -- shutdown -------------------------------------------------------------------------------

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop the workers and leave the process group; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        group = getattr(self, "group", None)
        if group is not None and self._broken is None and all(p.is_alive() for p in self.procs):
            try:
                dist.broadcast_object_list([(STOP, (), False)], src=0, group=group.cpu_group)
            except Exception:  # noqa: BLE001 - the workers are stopped below either way
                pass
        # A broken group cannot deliver STOP: whoever is left waits in a collective for good.
        deadline = time.monotonic() + (grace_s if self._broken is None else min(grace_s, 1.0))
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        self.state = None
        if dist.is_initialized():
            try:
                if group is not None:
                    dist.destroy_process_group(group.cpu_group)
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001
                pass
        # Drop the last handles now: C++ threads of process groups and of the rendezvous server
        # must end while the interpreter is alive, not during its teardown (std::terminate).
        self.group = None
        self.store = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
