"""The simulator runs the engine's own scheduler, policy and loop: fed the durations a real engine
measured, it reproduces that engine's schedule step for step and every token's time."""

from __future__ import annotations

import random

import pytest

from adaptive_sarathi.engine.budget import BudgetPolicy, FixedBudget, StepBudget
from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.executor import Executor
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.latency import ReplayLatencyModel, StepShape
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.simulator import VirtualClock, drive, simulate
from adaptive_sarathi.engine.stats import EngineState
from adaptive_sarathi.workloads import WorkloadRequest


class ClockedExecutor(Executor):
    """The real model executor, with engine time advanced by each step's measured duration (so
    that arrivals line up with the simulation exactly); records each step's schedule and shape."""

    def __init__(self, inner: Executor, clock: VirtualClock):
        self.inner, self.clock = inner, clock
        self.num_kv_blocks, self.block_size, self.vocab_size = inner.num_kv_blocks, inner.block_size, inner.vocab_size
        self.schedule: list[dict[str, int]] = []
        self.shapes: list[StepShape] = []
        self.durations: list[float] = []

    def execute(self, batch: ScheduledBatch) -> StepResult:
        result = self.inner.execute(batch)
        self.clock.advance(result.duration_s)
        self.schedule.append(batch.tokens_by_request())
        self.shapes.append(StepShape.from_batch(batch))
        self.durations.append(result.duration_s)
        return result


class QueueAwareBudget(BudgetPolicy):
    """A policy whose decisions depend on the engine state and on observed durations, so that a
    replay only matches if both are reproduced."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.slow_steps = 0

    def decide(self, state: EngineState) -> StepBudget:
        budget = 16 if state.num_decodes > 2 else 40
        return StepBudget(budget + 8 * (self.slow_steps % 3), 12 if state.num_waiting > 1 else None)

    def observe(self, stats) -> None:
        self.slow_steps += stats.duration_s > 1e-3


def workload(seed: int, n: int) -> list[WorkloadRequest]:
    rng = random.Random(seed)
    t, requests = 0.0, []
    for i in range(n):
        t += rng.uniform(0.0, 0.0004) if i != n // 2 else 5.0  # two bursts and an idle gap to jump over
        requests.append(WorkloadRequest(t, rng.randint(3, 60), rng.randint(1, 12)))
    return requests


def assert_replay_matches(model: str | None, scheduler: str, make_policy, num_requests: int = 14) -> None:
    """Run the real engine on `model` (CPU), then simulate the same arrivals with its measured
    durations, and compare schedules and token times."""
    requests = workload(seed=3, n=num_requests)
    # A small KV cache (24 blocks of 4 tokens) so that requests are preempted and recomputed.
    engine = create_engine(EngineArgs(model=model, scheduler=scheduler, block_size=4, num_kv_blocks=24,
                                      max_num_seqs=6, max_model_len=96, device="cpu"), policy=make_policy())
    clock = VirtualClock()
    executor = ClockedExecutor(engine.executor, clock)
    engine.executor, engine.clock = executor, clock.now
    rng = random.Random(0)
    for i, r in enumerate(requests):
        engine.add_request([rng.randrange(3, 500) for _ in range(r.num_prompt_tokens)],
                           SamplingParams(max_tokens=r.num_output_tokens, ignore_eos=True),
                           request_id=str(i), arrival_time=r.arrival_time_s)
    timelines = {str(i): engine.scheduler.get_request(str(i)).timeline for i in range(len(requests))}
    drive(engine, clock, sorted(r.arrival_time_s for r in requests))
    assert any(len(s) > 1 for s in executor.schedule), "the run should batch requests together"

    replay = ReplayLatencyModel(executor.durations, executor.shapes)
    result = simulate(requests, engine.scheduler.config, make_policy(), replay, num_kv_blocks=24,
                      record_schedule=True)

    assert result.num_preemptions > 0, "the run should exercise preemption"
    assert result.schedule == tuple(executor.schedule)
    assert replay.num_steps == len(executor.durations)
    for i, timeline in enumerate(result.timelines):
        real = timelines[str(i)]
        assert timeline.token_times == real.token_times
        assert (timeline.first_scheduled_time, timeline.finished_time) == (real.first_scheduled_time,
                                                                           real.finished_time)


@pytest.mark.parametrize("scheduler,make_policy", [
    ("sarathi", lambda: FixedBudget(32, 12)),
    ("sarathi", QueueAwareBudget),
    ("vllm", lambda: FixedBudget(128)),
    ("orca", lambda: FixedBudget(128)),
])
def test_replaying_measured_durations_reproduces_the_real_schedule(scheduler, make_policy):
    assert_replay_matches("dummy:tiny", scheduler, make_policy)


@pytest.mark.slow
@pytest.mark.embedded_model
def test_replay_reproduces_the_schedule_of_smollm2():
    assert_replay_matches(None, "sarathi", QueueAwareBudget, num_requests=10)
