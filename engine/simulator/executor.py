"""The simulated executor: a latency model in place of the model, time on a virtual clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.executor import Executor
from adaptive_sarathi.engine.latency.shape import LatencyModel, StepShape
from adaptive_sarathi.engine.simulator.clock import VirtualClock

# The token id simulated prompts are made of (past their first token, see simulate()) and every
# step "samples" for a request without scripted outputs. Simulated requests set ignore_eos and the
# engine gets no EOS id, so it never ends a request early.
DUMMY_TOKEN = 0
# Simulated token ids are any int32 (what block hashing takes): workloads with real ids, and the
# distinct first token of each synthesized prompt.
SIMULATED_VOCAB_SIZE = 2 ** 31 - 1


class SimulatedExecutor(Executor):
    """Executes a step by asking `latency_model` how long it takes and advancing `clock` by that.

    Mutates `clock`; a sampling chunk of a request with scripted outputs (request id -> its
    output token ids; read, never copied or changed) "samples" the next of them, any other
    DUMMY_TOKEN. Raises whatever the latency model raises (e.g. a replay model that ran out of
    recorded steps). With record_schedule, `schedule` collects every step's tokens per request id.
    """

    vocab_size = SIMULATED_VOCAB_SIZE

    def __init__(self, latency_model: LatencyModel, clock: VirtualClock, num_kv_blocks: int, block_size: int,
                 record_schedule: bool = False, scripted_outputs: Mapping[str, Sequence[int]] | None = None):
        self.scripted_outputs = scripted_outputs or {}
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
        scripted = self.scripted_outputs
        if not scripted:
            return StepResult({c.request_id: DUMMY_TOKEN for c in batch.chunks if c.sample}, duration)
        sampled = {}
        for c in batch.chunks:
            if c.sample:
                script = scripted.get(c.request_id)
                sampled[c.request_id] = (script[c.num_output_tokens] if script is not None
                                         and c.num_output_tokens < len(script) else DUMMY_TOKEN)
        return StepResult(sampled, duration)
