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
from adaptive_sarathi.engine.simulator.admission import AdmissionGate, PendingRequest
from adaptive_sarathi.engine.stats import StepStats
from adaptive_sarathi.workloads import WorkloadRequest

# Token ids below this are left out of random prompts (special tokens sit at the low end).
_LOWEST_TOKEN = 100


@dataclass(frozen=True)
class RealTimeRun:
    """One served workload: the engine's requests in workload order (finished; their timelines
    are on the engine clock), every step's stats in step order, and the host seconds from the
    first arrival's offset origin to the last request's end. refused_classes: the SLO class of
    each request the policy refused on arrival (admission; those are not in `requests`)."""

    requests: tuple[Request, ...]
    stats: tuple[StepStats, ...]
    wall_s: float
    refused_classes: tuple[str | None, ...] = ()


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
                       warm: bool = True, id_prefix: str = "", start_delay_s: float = 0.05,
                       admission: bool = False) -> RealTimeRun:
    """Add every request of `workload` (random prompt ids of its prompt length, exactly its output
    length with EOS ignored) with its arrival offset from now + `start_delay_s`, then step the
    engine until all finish, sleeping while it is idle. `warm` serves one unmeasured request
    first (warm_up). Request ids are `id_prefix` + the workload index; each request carries its
    slo_class. With `admission`, each request is offered when it arrives (between two steps, as a
    server does) and refused where the policy does not admit it (simulate's AdmissionGate).

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
        pending = [PendingRequest(f"{id_prefix}{i}", random_prompt(rng, vocab, r.num_prompt_tokens),
                                  SamplingParams(max_tokens=r.num_output_tokens, ignore_eos=True),
                                  t0 + r.arrival_time_s, getattr(r, "slo_class", None))
                   for i, r in enumerate(workload)]
        gate = AdmissionGate(pending) if admission else None
        added = [q.add_to(engine) for q in pending] if gate is None else gate.admitted
        arrivals = sorted(q.arrival_time_s for q in pending)
        while engine.has_unfinished_requests() or (gate is not None and gate.num_pending):
            if gate is not None:
                gate.offer_arrived(engine, time.monotonic())
            before = engine.num_steps
            if engine.has_unfinished_requests():
                engine.step()
            if engine.num_steps == before:  # nothing has arrived yet: sleep until something does
                i = bisect.bisect_right(arrivals, time.monotonic())
                if i < len(arrivals):
                    time.sleep(max(0.0, arrivals[i] - time.monotonic()))
        order = {q.request_id: i for i, q in enumerate(pending)}
        requests = tuple(sorted(added, key=lambda r: order[r.request_id]))
        refused = () if gate is None else tuple(q.slo_class for q in gate.refused)
        wall = time.monotonic() - t0
    finally:
        engine.stats_listeners.remove(stats.append)
    return RealTimeRun(requests, tuple(stats), wall, refused)
