"""Serve a workload on a real engine in real time: requests arrive at their offsets from now on the
engine's monotonic clock, the engine steps while it has work and sleeps until the next arrival
while it has none. What the experiments that compare real runs with simulated ones share."""

from __future__ import annotations

import bisect
import random
import time
from dataclasses import dataclass
from typing import Sequence

from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.request import Request
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.stats import StepStats
from adaptive_sarathi.workloads import WorkloadRequest

# Token ids below this are left out of random prompts (special tokens sit at the low end).
_LOWEST_TOKEN = 100


@dataclass(frozen=True)
class RealTimeRun:
    """One served workload: the engine's requests in workload order (finished; their timelines
    are on the engine clock), every step's stats in step order, and the host seconds from the
    first arrival's offset origin to the last request's end."""

    requests: tuple[Request, ...]
    stats: tuple[StepStats, ...]
    wall_s: float


def random_prompt(rng: random.Random, vocab_size: int, length: int) -> list[int]:
    """`length` random token ids in [min(100, vocab_size - 1), vocab_size)."""
    low = min(_LOWEST_TOKEN, vocab_size - 1)
    return [rng.randrange(low, vocab_size) for _ in range(length)]


def warm_up(engine: LLMEngine, seed: int = 0, prompt_tokens: int = 64, output_tokens: int = 4) -> None:
    """Serve one short request to the end, unmeasured: an engine's first steps pay one-time costs
    (allocations, lazy initialization). Mutates the engine (and its policy, which observes)."""
    rng = random.Random(seed)
    engine.add_request(random_prompt(rng, engine.executor.vocab_size, prompt_tokens),
                       SamplingParams(max_tokens=output_tokens, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()


def serve_in_real_time(engine: LLMEngine, workload: Sequence[WorkloadRequest], seed: int,
                       warm: bool = True, id_prefix: str = "", start_delay_s: float = 0.05) -> RealTimeRun:
    """Add every request of `workload` (random prompt ids of its prompt length, exactly its output
    length with EOS ignored) with its arrival offset from now + `start_delay_s`, then step the
    engine until all finish, sleeping while it is idle. `warm` serves one unmeasured request
    first (warm_up). Request ids are `id_prefix` + the workload index.

    The engine must be idle on entry (ValueError otherwise: finish or abort what it holds). It is
    mutated (its policy observes every step); a stats listener is added for the run and removed
    before returning. Raises InvalidRequestError when a request does not fit the engine's window.
    """
    if engine.has_unfinished_requests():
        raise ValueError(f"the engine holds {engine.num_waiting} waiting and {engine.num_running} running requests: "
                         "serve a workload on an idle engine")
    if warm:
        warm_up(engine, seed)
    rng = random.Random(seed)
    vocab = engine.executor.vocab_size
    stats: list[StepStats] = []
    engine.stats_listeners.append(stats.append)
    try:
        t0 = time.monotonic() + start_delay_s
        ids = [f"{id_prefix}{i}" for i in range(len(workload))]
        for rid, r in zip(ids, workload):
            engine.add_request(random_prompt(rng, vocab, r.num_prompt_tokens),
                               SamplingParams(max_tokens=r.num_output_tokens, ignore_eos=True),
                               request_id=rid, arrival_time=t0 + r.arrival_time_s)
        requests = tuple(engine.scheduler.get_request(rid) for rid in ids)
        arrivals = sorted(t0 + r.arrival_time_s for r in workload)
        while engine.has_unfinished_requests():
            before = engine.num_steps
            engine.step()
            if engine.num_steps == before:  # nothing has arrived yet: sleep until something does
                i = bisect.bisect_right(arrivals, time.monotonic())
                if i < len(arrivals):
                    time.sleep(max(0.0, arrivals[i] - time.monotonic()))
        wall = time.monotonic() - t0
    finally:
        engine.stats_listeners.remove(stats.append)
    return RealTimeRun(requests, tuple(stats), wall)
