"""simulate(): the real scheduler, budget policy and engine loop over a latency model and a
virtual clock."""

from __future__ import annotations

import bisect
import time
from array import array
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from adaptive_sarathi.engine.budget import BudgetPolicy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.latency.shape import LatencyModel
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.engine.simulator.admission import AdmissionGate, PendingRequest
from adaptive_sarathi.engine.simulator.clock import VirtualClock
from adaptive_sarathi.engine.simulator.executor import DUMMY_TOKEN, SimulatedExecutor
from adaptive_sarathi.engine.simulator.result import SimulationResult, summarize
from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import StepStats


class ArrivingRequest(Protocol):
    """What simulate() needs of a request (adaptive_sarathi.workloads.WorkloadRequest has it).
    slo_class, where present, names the request's class (None or absent: the top-level targets).
    prompt_token_ids, where present and not None, are the prompt's token ids (what prefix caching
    matches; num_prompt_tokens of them), output_token_ids the outputs the request produces."""

    arrival_time_s: float
    num_prompt_tokens: int
    num_output_tokens: int


def drive(engine: LLMEngine, clock: VirtualClock, arrival_times: Sequence[float],
          progress: tqdm | None = None, gate: AdmissionGate | None = None) -> None:
    """Step `engine` until no request is left, jumping `clock` to the next arrival whenever a step
    finds nothing to run. Mutates the engine and the clock; ticks `progress` once per finished
    request (and once per refused one). Raises RuntimeError if requests are left that no step
    can run.

    arrival_times: the arrival times of every request added or held by `gate`, sorted. Requests
    that have not arrived yet are all waiting (or held by the gate), so the first of these after
    the clock is the next arrival, found by bisection instead of a scan of the waiting queue.
    gate: requests not added yet; before every step it offers the engine those arrived by then
    (AdmissionGate.offer_arrived), as a server does between two steps.
    """
    while engine.has_unfinished_requests() or (gate is not None and gate.num_pending):
        if gate is not None:
            refused = gate.offer_arrived(engine, clock.now())
            if refused and progress is not None:
                progress.update(refused)
        before = engine.num_steps
        outputs = engine.step() if engine.has_unfinished_requests() else []
        if progress is not None:
            done = sum(o.finished for o in outputs)
            if done:
                progress.update(done)
        if engine.num_steps == before:
            i = bisect.bisect_right(arrival_times, clock.now())
            if i == len(arrival_times):
                raise RuntimeError(f"{engine.scheduler.num_waiting} waiting requests can never be scheduled")
            clock.jump_to(arrival_times[i])


def simulate(workload: Sequence[ArrivingRequest], scheduler: str | SchedulerConfig, policy: BudgetPolicy,
             latency_model: LatencyModel, *, num_kv_blocks: int, slo: SloTargets | None = None,
             record_steps: bool = False, record_schedule: bool = False,
             progress: bool = False, admission: bool = False) -> SimulationResult:
    """Serve `workload` with the engine's own scheduler, `policy` and step loop, each step taking
    latency_model.step_time(shape) seconds of virtual time (which starts at 0).

    Every request gets `num_output_tokens` tokens exactly (EOS ignored): its output_token_ids
    where it has them, else DUMMY_TOKEN. Its prompt is its prompt_token_ids where it has them;
    else a prompt that shares no block with another request's (a first token of its own, then
    DUMMY_TOKEN), so that prefix caching finds only what a workload says is shared.
    `policy` is mutated (it
    observes every step); pass a fresh one per run. record_steps keeps every StepStats,
    record_schedule every step's tokens per request id (request ids are workload indices as
    strings). Each request carries its `slo_class` (where it has one) into the engine's Request,
    and `slo` judges it by that class's targets (SloTargets.targets_for). With `admission`, each
    request is offered to the engine when it arrives and refused where the policy does not admit
    it (BudgetPolicy.admits, the check behind a server's 429); a refused request counts as one
    that never got a first token (result.num_refused). Without it every request is queued ahead
    of time and served. Raises ValueError
    naming the setting to change when a request does not fit the context window (max_model_len,
    or the KV cache), or when `slo` has no targets for a request's class.
    """
    start = time.perf_counter()
    config = scheduler if isinstance(scheduler, SchedulerConfig) else SchedulerConfig(name=scheduler)
    sched = make_scheduler(config, num_kv_blocks)
    window = sched.max_context_len
    classes = check_workload(workload, config, window, num_kv_blocks, slo)
    clock = VirtualClock(0.0)
    scripted = {str(i): r.output_token_ids for i, r in enumerate(workload)
                if getattr(r, "output_token_ids", None) is not None}
    executor = SimulatedExecutor(latency_model, clock, num_kv_blocks, config.block_size,
                                 record_schedule=record_schedule, scripted_outputs=scripted)
    engine = LLMEngine(sched, executor, policy, tokenizer=None, max_model_len=window, eos_token_ids=(),
                       clock=clock.now)
    budgets, chunks, tokens = array("q"), array("q"), array("q")
    steps: list[StepStats] = []

    def record(stats: StepStats) -> None:
        budgets.append(stats.token_budget)
        chunks.append(stats.max_chunk)
        tokens.append(stats.num_decode_tokens + stats.num_prefill_tokens)
        if record_steps:
            steps.append(stats)

    engine.stats_listeners.append(record)
    params: dict[int, SamplingParams] = {}
    pending = [PendingRequest(str(i), prompt_of(i, r), params_of(r, params), r.arrival_time_s, classes[i])
               for i, r in enumerate(workload)]
    gate = AdmissionGate(pending) if admission else None
    requests = [q.add_to(engine) for q in pending] if gate is None else gate.admitted
    with tqdm(total=len(pending), desc="simulate", unit="req", disable=not progress, leave=False) as bar:
        drive(engine, clock, sorted(r.arrival_time_s for r in workload), bar if progress else None, gate)
    refused = [] if gate is None else gate.refused
    wall = time.perf_counter() - start
    return summarize(requests, sum(r.num_prompt_tokens for r in requests), np.frombuffer(budgets, dtype=np.int64),
                     np.frombuffer(chunks, dtype=np.int64), np.frombuffer(tokens, dtype=np.int64), slo, wall,
                     tuple(steps) if record_steps else None,
                     tuple(executor.schedule) if record_schedule else None,
                     refused_classes=[q.slo_class for q in refused])


def check_workload(workload: Sequence[ArrivingRequest], config: SchedulerConfig, window: int, num_kv_blocks: int,
                   slo: SloTargets | None) -> list[str | None]:
    """The SLO class of every request (None where it has none), after checking that each fits
    the context window `window` and that `slo` knows its class. Raises ValueError naming the
    setting to change."""
    for i, r in enumerate(workload):
        if r.num_prompt_tokens + r.num_output_tokens > window:
            raise ValueError(
                f"request {i} needs {r.num_prompt_tokens} + {r.num_output_tokens} tokens but the context window is "
                f"{window} (max_model_len={config.max_model_len}, {num_kv_blocks} KV blocks of {config.block_size}): "
                "raise max_model_len or the KV blocks, or cap the workload's prompt/output lengths")
    classes = [getattr(r, "slo_class", None) for r in workload]
    if slo is not None and not slo.is_empty:
        for name in set(classes) - {None}:
            slo.targets_for(name)  # raises, naming the known classes, before anything runs
    return classes


def prompt_of(index: int, request: ArrivingRequest) -> list[int]:
    """The prompt token ids request `index` is simulated with (see simulate). Raises ValueError
    when its prompt_token_ids disagree with num_prompt_tokens."""
    prompt = getattr(request, "prompt_token_ids", None)
    if prompt is None:
        return [index + 1] + [DUMMY_TOKEN] * (request.num_prompt_tokens - 1)
    if len(prompt) != request.num_prompt_tokens:
        raise ValueError(f"request {index} has {len(prompt)} prompt token ids but num_prompt_tokens="
                         f"{request.num_prompt_tokens}: make them agree")
    return list(prompt)


def params_of(request: ArrivingRequest, cache: dict[int, SamplingParams]) -> SamplingParams:
    """The request's SamplingParams: exactly num_output_tokens, EOS ignored; one frozen object per
    output length, kept in `cache` (mutated)."""
    p = cache.get(request.num_output_tokens)
    if p is None:
        p = cache[request.num_output_tokens] = SamplingParams(max_tokens=request.num_output_tokens, ignore_eos=True)
    return p
