"""The profiler's KV pool over a tensor-parallel group: every rank's cache grows together."""

from __future__ import annotations

from types import SimpleNamespace

from adaptive_sarathi.engine.batch import ScheduledBatch
from adaptive_sarathi.engine.distributed.session import TensorParallelSession
from adaptive_sarathi.engine.profiling.kv_pool import GrowingKvPool


class _RemoteRunner:
    """What the profiler needs of a runner: execute(batch) and model.config.vocab_size."""

    def __init__(self, session: TensorParallelSession, num_blocks: int):
        self.session, self.num_blocks = session, num_blocks
        self.model = SimpleNamespace(config=session.config)

    def execute(self, batch: ScheduledBatch) -> dict[str, int]:
        return self.session.call("execute", batch)


class TensorParallelKvPool(GrowingKvPool):
    """A GrowingKvPool over every rank of a session, for the profiler: each rank's cache grows
    together, filled with seeded random values."""

    def __init__(self, session: TensorParallelSession, block_size: int, capacity_blocks: int, seed: int = 0):
        super().__init__(block_size, capacity_blocks, seed)
        self.session = session

    def _new_runner(self, num_blocks: int) -> _RemoteRunner:
        self.session.call("make_runner", num_blocks, self.block_size, self.seed, True)
        return _RemoteRunner(self.session, num_blocks)

    def release(self) -> None:
        super().release()
        if not self.session._closed:
            self.session.call("release")
