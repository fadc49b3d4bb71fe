"""simulate_replicas(): N engine replicas behind a router, one virtual timeline.

Each replica is the engine the single-replica simulate() runs (its own scheduler, budget policy,
KV cache, simulated executor and virtual clock); a router in front places every request, when it
arrives, by a routing policy (engine/routing.py) over the replicas' snapshots
(engine/queue_forecast.py), as the Ray Serve ingress does.

Time: the replicas run in parallel, so each has its own clock: the end of its last step (or the
last arrival it was handed, when idle). A discrete-event loop always advances the replica whose
clock is earliest, and hands an arriving request over once every replica has stepped up to its
arrival time. A replica in the middle of a step is seen by the router as that step will leave it
(its snapshot's busy_until_s is the step's end): a router sees the state at step boundaries.

Admission: in the served system every replica is a whole server, which answers 429 by its own
policy's admits() before it queues a request, and the ingress passes that 429 to the client. With
admission=True each replica does the same here, through the same call a single simulated engine
makes (PendingRequest.offer_to, as AdmissionGate does), at the step boundary the request arrives
in. So a router that places a request where it cannot be served in time gets it refused, not
queued behind a backlog that misses every deadline.
"""

from __future__ import annotations

import heapq
import time
from array import array
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from adaptive_sarathi.engine.budget import BudgetPolicy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.latency.shape import LatencyModel
from adaptive_sarathi.engine.queue_forecast import PrefillRate, ReplicaSnapshot, snapshot
from adaptive_sarathi.engine.routing import RouteRequest, get_policy
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.engine.simulator.admission import PendingRequest
from adaptive_sarathi.engine.simulator.clock import VirtualClock
from adaptive_sarathi.engine.simulator.executor import SimulatedExecutor
from adaptive_sarathi.engine.simulator.result import SimulationResult, summarize
from adaptive_sarathi.engine.simulator.run import ArrivingRequest, check_workload, params_of, prompt_of
from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import StepStats


class _Replica:
    """One simulated engine with its clock and the step records the result is built from."""

    def __init__(self, config: SchedulerConfig, policy: BudgetPolicy, latency_model: LatencyModel,
                 num_kv_blocks: int, scripted: dict):
        self.clock = VirtualClock(0.0)
        self.scheduler = make_scheduler(config, num_kv_blocks)
        executor = SimulatedExecutor(latency_model, self.clock, num_kv_blocks, config.block_size,
                                     scripted_outputs=scripted)
        self.engine = LLMEngine(self.scheduler, executor, policy, tokenizer=None,
                                max_model_len=self.scheduler.max_context_len, eos_token_ids=(), clock=self.clock.now)
        self.rate = PrefillRate()
        self.budgets, self.chunks, self.tokens = array("q"), array("q"), array("q")
        self.engine.stats_listeners.append(self._record)
        self.engine.stats_listeners.append(self.rate)
        self.num_served = 0
        self.num_refused = 0  # by this replica's own admission

    def _record(self, stats: StepStats) -> None:
        self.budgets.append(stats.token_budget)
        self.chunks.append(stats.max_chunk)
        self.tokens.append(stats.num_decode_tokens + stats.num_prefill_tokens)

    def snapshot(self) -> ReplicaSnapshot:
        return snapshot(self.engine.state(), self.engine.policy, self.rate)


def simulate_replicas(workload: Sequence[ArrivingRequest], scheduler: str | SchedulerConfig,
                      make_policy: Callable[[], BudgetPolicy], latency_model: LatencyModel, *,
                      num_replicas: int, routing: str, num_kv_blocks: int, slo: SloTargets | None = None,
                      progress: bool = False, admission: bool = False) -> SimulationResult:
    """Serve `workload` on `num_replicas` replicas, each built as simulate() builds its engine
    (scheduler config, `num_kv_blocks` of KV cache, a fresh policy from make_policy(), the same
    latency model), placed by the routing policy `routing` when each request arrives.

    Requests are served exactly as in simulate() (request ids are workload indices as strings).
    A request the router refuses (headroom, when no replica is forecast to meet its TTFT target)
    is never served: it counts as a miss (summarize's refused_classes). With `admission`, the
    replica a request is placed on then asks its own policy (LLMEngine.admits, as simulate's
    admission and a server do) and refuses it where that says no: a miss too, counted in
    refused_per_replica; without it every placed request is queued. num_refused counts both
    kinds (router refusals: num_refused - sum(refused_per_replica)). The result is over every
    replica's requests and steps; requests_per_replica says how many each served. Raises
    ValueError as simulate() does, for num_replicas < 1 or an unknown routing policy.
    """
    if not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas!r} is invalid: use an integer >= 1")
    route = get_policy(routing)
    start = time.perf_counter()
    config = scheduler if isinstance(scheduler, SchedulerConfig) else SchedulerConfig(name=scheduler)
    window = make_scheduler(config, num_kv_blocks).max_context_len
    classes = check_workload(workload, config, window, num_kv_blocks, slo)
    scripted = {str(i): r.output_token_ids for i, r in enumerate(workload)
                if getattr(r, "output_token_ids", None) is not None}
    replicas = [_Replica(config, make_policy(), latency_model, num_kv_blocks, scripted) for _ in range(num_replicas)]
    order = sorted(range(len(workload)), key=lambda i: workload[i].arrival_time_s)
    params: dict[int, SamplingParams] = {}
    served, rejected = [], []
    busy: list[tuple[float, int]] = []  # (clock, index) of replicas holding requests
    with tqdm(total=len(order), desc="simulate", unit="req", disable=not progress, leave=False) as bar:
        for placed, i in enumerate(order):
            r = workload[i]
            arrival = r.arrival_time_s
            _run_until(replicas, busy, arrival)
            decision = route(_Snapshots(replicas), RouteRequest(r.num_prompt_tokens, classes[i], placed, arrival))
            bar.update(1)
            if decision.replica is None:
                rejected.append(classes[i])
                continue
            rep = replicas[decision.replica]
            was_idle = not rep.engine.has_unfinished_requests()
            if rep.clock.now() < arrival:  # an idle replica: its admission judges the queue at the arrival
                rep.clock.jump_to(arrival)
            pending = PendingRequest(str(i), prompt_of(i, r), params_of(r, params), arrival, classes[i])
            request = pending.offer_to(rep.engine) if admission else pending.add_to(rep.engine)
            if request is None:
                rep.num_refused += 1
                rejected.append(classes[i])
                continue
            served.append(request)
            rep.num_served += 1
            if was_idle:
                heapq.heappush(busy, (rep.clock.now(), decision.replica))
        _run_until(replicas, busy, float("inf"))
    wall = time.perf_counter() - start

    def joined(name: str) -> np.ndarray:
        parts = [np.frombuffer(getattr(rep, name), dtype=np.int64) for rep in replicas]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    result = summarize(served, sum(workload[int(q.request_id)].num_prompt_tokens for q in served),
                       joined("budgets"), joined("chunks"), joined("tokens"), slo, wall, None, None,
                       refused_classes=rejected)
    return replace(result, requests_per_replica=tuple(rep.num_served for rep in replicas),
                   refused_per_replica=tuple(rep.num_refused for rep in replicas))


class _Snapshots(Sequence[ReplicaSnapshot]):
    """The replicas' snapshots, each built when a policy first reads it (round robin reads
    none; 64 replicas' snapshots per arrival are most of a large simulation's routing cost)."""

    def __init__(self, replicas: list[_Replica]):
        self._replicas = replicas
        self._built: dict[int, ReplicaSnapshot] = {}

    def __len__(self) -> int:
        return len(self._replicas)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if index < 0:
            index += len(self)
        if index not in self._built:
            self._built[index] = self._replicas[index].snapshot()
        return self._built[index]


def _run_until(replicas: list[_Replica], busy: list[tuple[float, int]], until_s: float) -> None:
    """Step the busy replica with the earliest clock while that clock is <= until_s; a replica
    that runs out of requests leaves `busy` (mutated), one whose step found nothing to run (every
    request it holds is blocked) is an error: a request was handed over only once it arrived."""
    while busy and busy[0][0] <= until_s:
        _, index = heapq.heappop(busy)
        rep = replicas[index]
        before = rep.engine.num_steps
        rep.engine.step()
        if rep.engine.num_steps == before:
            raise RuntimeError(f"replica {index} holds {rep.scheduler.num_waiting} waiting requests it can never "
                               "schedule")
        if rep.engine.has_unfinished_requests():
            heapq.heappush(busy, (rep.clock.now(), index))
