"""A small engine on a virtual clock with host work between steps, for the step-log tests."""

from __future__ import annotations

from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.latency import LinearLatencyModel
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.engine.simulator import SimulatedExecutor, VirtualClock, drive
from adaptive_sarathi.engine.stats import StepStats

TRUTH = LinearLatencyModel((0.004, 2e-5, 1e-4, 3e-4, 1e-7))


class Alternating(BudgetPolicy):
    """Budgets 32 and 48 in turn, each with its own reason."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.calls = 0

    def decide(self, state):
        self.calls += 1
        return StepBudget(32, 16, reason="odd") if self.calls % 2 else StepBudget(48, reason="even")


def run_engine(arrivals, host_s: float = 0.0, listeners=(), prompt=40, outputs=5) -> list[StepStats]:
    """Serve requests arriving at `arrivals` on a virtual clock; every step costs TRUTH's time on
    the executor and `host_s` after it (a listener advances the clock, as host work would)."""
    clock = VirtualClock()
    scheduler = make_scheduler(SchedulerConfig(name="sarathi", block_size=16), 200)
    engine = LLMEngine(scheduler, SimulatedExecutor(TRUTH, clock, 200, 16), Alternating(), None,
                       scheduler.max_context_len, (), clock=clock.now)
    steps: list[StepStats] = []
    engine.stats_listeners.append(steps.append)
    engine.stats_listeners.extend(listeners)
    if host_s:
        engine.stats_listeners.append(lambda stats: clock.advance(host_s))
    for i, t in enumerate(arrivals):
        # Prompts as simulate() makes them for requests without token ids: sharing no block.
        engine.add_request([i + 1] + [0] * (prompt - 1), SamplingParams(max_tokens=outputs, ignore_eos=True), request_id=str(i),
                           arrival_time=t)
    drive(engine, clock, sorted(arrivals))
    return steps
