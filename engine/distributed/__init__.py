"""Tensor parallelism across the GPUs of one host on torch.distributed (NCCL on CUDA, gloo on the CPU).

Modules, one job each: env (process environment), sharding (how weights split, size checks),
group (process-group handles), layers (row-parallel linear, vocab-parallel embedding), tp_model
(one rank's model slice), rank_state (what each rank holds and runs), worker (spawned ranks'
loop), session (the driver: spawn, call, shutdown), executor (the engine's executor and the
profiler's KV pool over a session).
"""

from adaptive_sarathi.engine.distributed.sharding import (ShardSpec, check_tensor_parallel_size,
                                                          valid_tensor_parallel_sizes)

__all__ = ["ShardSpec", "check_tensor_parallel_size", "valid_tensor_parallel_sizes"]
