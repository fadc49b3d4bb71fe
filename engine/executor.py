"""The executor interface (step 3 of the engine loop) and the real-model executor."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.model_runner import ModelRunner


class Executor(ABC):
    """Runs one ScheduledBatch. The real executor runs the model; a simulated one consults a
    latency model and advances a virtual clock. Both return the step's duration."""

    num_kv_blocks: int
    block_size: int
    vocab_size: int

    @abstractmethod
    def execute(self, batch: ScheduledBatch) -> StepResult:
        """Compute the batch; returns sampled tokens (one per sampling chunk) and the duration in
        seconds. Raises on device failure; the engine treats that as fatal."""

    def shutdown(self) -> None:
        """Release what the executor holds outside this process (worker processes); the executor
        is unusable afterwards. A no-op for executors that hold nothing of the kind; safe to call
        more than once."""


class ModelExecutor(Executor):
    """Executes on a ModelRunner, timing each step on the host clock (synchronizing the GPU)."""

    def __init__(self, runner: ModelRunner):
        self.runner = runner
        self.num_kv_blocks = runner.num_blocks
        self.block_size = runner.block_size
        self.vocab_size = runner.model.config.vocab_size
        self._sync = torch.cuda.synchronize if runner.device.type == "cuda" else (lambda: None)

    def execute(self, batch: ScheduledBatch) -> StepResult:
        start = time.perf_counter()
        tokens = self.runner.execute(batch)
        self._sync()
        return StepResult(tokens.token_ids, time.perf_counter() - start, tokens.logprobs)
