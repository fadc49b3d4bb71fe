"""The simulated executor: a latency model in place of the model, time on a virtual clock."""

from __future__ import annotations

from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.executor import Executor
from adaptive_sarathi.engine.latency.shape import LatencyModel, StepShape
from adaptive_sarathi.engine.simulator.clock import VirtualClock

# The one token id simulated prompts are made of and every step "samples". Simulated requests set
# ignore_eos and the engine gets no EOS id, so it never ends a request early.
DUMMY_TOKEN = 0


class SimulatedExecutor(Executor):
    """Executes a step by asking `latency_model` how long it takes and advancing `clock` by that.

    Mutates `clock`; returns DUMMY_TOKEN for every sampling chunk. Raises whatever the latency
    model raises (e.g. a replay model that ran out of recorded steps). With record_schedule,
    `schedule` collects every step's tokens per request id.
    """

    vocab_size = DUMMY_TOKEN + 1

    def __init__(self, latency_model: LatencyModel, clock: VirtualClock, num_kv_blocks: int, block_size: int,
                 record_schedule: bool = False):
        self.latency_model = latency_model
        self.clock = clock
        self.num_kv_blocks = num_kv_blocks
        self.block_size = block_size
        self.schedule: list[dict[str, int]] | None = [] if record_schedule else None

    def execute(self, batch: ScheduledBatch) -> StepResult:
        if self.schedule is not None:
            self.schedule.append(batch.tokens_by_request())
        duration = self.latency_model.step_time(StepShape.from_batch(batch))
        self.clock.advance(duration)
        return StepResult({c.request_id: DUMMY_TOKEN for c in batch.chunks if c.sample}, duration)
