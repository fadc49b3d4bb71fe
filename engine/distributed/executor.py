"""TensorParallelExecutor: step 3 of the engine loop over a tensor-parallel group."""

from __future__ import annotations

import time

import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.distributed.session import TensorParallelSession
from adaptive_sarathi.engine.executor import Executor


class TensorParallelExecutor(Executor):
    """Runs each ScheduledBatch on every rank of `session` (the plan is broadcast, only the
    driver's sampled tokens are returned) and times it on the host clock, the driver's GPU
    synchronized (its logits gather waits for every rank). Owns the session: shutdown() ends it."""

    def __init__(self, session: TensorParallelSession, num_blocks: int, block_size: int, seed: int = 0):
        self.session = session
        self.num_kv_blocks = num_blocks
        self.block_size = block_size
        self.vocab_size = session.config.vocab_size
        session.call("make_runner", num_blocks, block_size, seed)
        device = session.state.device
        self._sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    @property
    def runner(self):
        """The driver's own ModelRunner (rank 0's slice and KV cache)."""
        return self.session.state.runner

    def execute(self, batch: ScheduledBatch) -> StepResult:
        start = time.perf_counter()
        tokens = self.session.call("execute", batch)
        self._sync()
        return StepResult(tokens.token_ids, time.perf_counter() - start, tokens.logprobs)

    def logits_for(self, batch: ScheduledBatch) -> torch.Tensor:
        """Full-vocabulary logits of the batch's sampling rows (CPU, float32); writes the caches."""
        return self.session.call("logits_for", batch)

    def shutdown(self) -> None:
        """Stop the workers; the executor is unusable afterwards."""
        self.session.shutdown()
