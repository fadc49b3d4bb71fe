"""A seeded toy engine for exercising budget policies without a model, a scheduler or the simulator.

Requests arrive as a Poisson process; each step the policy decides a budget, decodes go first and
prefill chunks fill the rest FCFS (Sarathi-Serve's order), and the step takes a noisy time from a
LatencyModel. It reacts to the budget, so closed-loop behaviour can be tested, and needs no model
or GPU, so a policy's own overhead can be timed in isolation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.engine.latency.shape import LatencyModel, StepShape
from adaptive_sarathi.engine.stats import PREFILL_QUEUE_LEN, EngineState, StepStats


@dataclass(frozen=True)
class ToyLatency:
    """A linear-plus-tile-step step time, roughly an 8B model on one H100: a bandwidth floor, a
    cost per started GEMM tile of tokens, per attended context token and per prefill sequence.
    `scale` multiplies everything (a regime change is a new ToyLatency with scale 1.5)."""

    base_ms: float = 6.0
    tile_ms: float = 3.0
    tile_tokens: int = 128
    context_ms_per_1k: float = 0.05
    prefill_seq_ms: float = 0.3
    scale: float = 1.0

    def step_time(self, shape: StepShape) -> float:
        tiles = -(-shape.num_tokens // self.tile_tokens)
        ms = (self.base_ms + self.tile_ms * tiles + self.context_ms_per_1k * shape.sum_context_tokens / 1000
              + self.prefill_seq_ms * shape.num_prefill_seqs)
        return ms * self.scale * 1e-3


@dataclass(eq=False)
class _Request:
    arrival_s: float
    prompt: int
    output: int
    computed: int = 0
    generated: int = 0
    last_token_s: float = 0.0

    @property
    def in_prefill(self) -> bool:
        return self.computed < self.prompt


@dataclass
class StepRecord:
    """One step of a synthetic run: what the policy saw, decided, and what happened."""

    state: EngineState
    budget: StepBudget
    stats: StepStats


@dataclass
class SyntheticStream:
    """A toy engine; `run` drives a policy through `num_steps` steps (mutating the stream's queues
    and the policy, never the states and stats it hands out)."""

    latency: LatencyModel = field(default_factory=ToyLatency)
    seed: int = 0
    arrival_rate_per_s: float = 20.0
    prompt_tokens: tuple[int, int] = (64, 2048)
    output_tokens: tuple[int, int] = (16, 512)
    max_running: int = 128
    noise: float = 0.05  # sigma of a lognormal factor on every step time
    ttft_s: float = math.inf  # requests' TTFT target (their deadlines in the prefill queue); run() sets the policy's
    tbt_s: float = math.inf  # decodes' TBT target; run() sets the policy's
    now_s: float = 0.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._next_arrival = self._rng.expovariate(self.arrival_rate_per_s)
        self._waiting: list[_Request] = []
        self._running: list[_Request] = []
        self._step = 0

    def add(self, prompt: int, output: int, context_done: int = 0) -> None:
        """Put a request in flight now: waiting, or decoding if `context_done` >= prompt."""
        r = _Request(self.now_s, prompt, output, computed=min(context_done, prompt), last_token_s=self.now_s)
        (self._running if r.computed >= prompt else self._waiting).append(r)

    def state(self) -> EngineState:
        self._arrive()
        decodes = [r for r in self._running if not r.in_prefill]
        return EngineState(
            now_s=self.now_s, num_waiting=len(self._waiting), num_running=len(self._running),
            num_decodes=len(decodes), num_free_blocks=max(0, 100_000 - self._used_blocks()),
            num_total_blocks=100_000, block_size=16,
            admissible_free_tokens=max(0, 100_000 - 1000 - self._used_blocks()) * 16, admissible_kv_tokens=99_000 * 16,
            decode_context_tokens=sum(r.computed + r.generated for r in decodes),
            running_prefill_tokens=sum(r.prompt - r.computed for r in self._running if r.in_prefill),
            waiting_prefill_tokens=sum(r.prompt for r in self._waiting),
            oldest_waiting_age_s=self.now_s - self._waiting[0].arrival_s if self._waiting else 0.0,
            max_decode_gap_s=max((self.now_s - r.last_token_s for r in decodes), default=0.0),
            prefill_queue=tuple((r.arrival_s + self.ttft_s, r.prompt - r.computed, r.computed) for r in
                                [*(r for r in self._running if r.in_prefill), *self._waiting][:PREFILL_QUEUE_LEN]),
            decode_tbt_slack_s=min((self.tbt_s - (self.now_s - r.last_token_s) for r in decodes), default=math.inf))

    def next_state(self) -> EngineState:
        """state(), after skipping idle time to the next arrival when nothing is queued or running."""
        state = self.state()
        if not state.num_waiting and not state.num_running:
            self.now_s = self._next_arrival
            state = self.state()
        return state

    def step(self, budget: StepBudget) -> StepStats:
        """Run one step under `budget`: decodes first, then running prefills, then admissions."""
        start = self.now_s
        remaining, chunk_limit = budget.token_budget, budget.chunk_limit
        decodes = [r for r in self._running if not r.in_prefill][:remaining]
        remaining -= len(decodes)
        chunks: list[tuple[_Request, int]] = []
        for r in [r for r in self._running if r.in_prefill] + self._waiting:
            if remaining == 0:
                break
            if r in self._waiting:
                if len(self._running) >= self.max_running:
                    break
                self._waiting.remove(r)
                self._running.append(r)
            n = min(r.prompt - r.computed, chunk_limit, remaining)
            chunks.append((r, n))
            remaining -= n
        contexts = [r.computed + r.generated for r in decodes] + [r.computed + n for r, n in chunks]
        shape = StepShape(sum(n for _, n in chunks), len(decodes), len(chunks), sum(contexts))
        duration = self.latency.step_time(shape) * math.exp(self._rng.gauss(0.0, self.noise))
        end = self.now_s = start + duration
        gaps = [end - r.last_token_s for r in decodes]
        ttfts = []
        for r in decodes:
            r.generated += 1
            r.last_token_s = end
        for r, n in chunks:
            r.computed += n
            if not r.in_prefill:
                r.generated, r.last_token_s = 1, end
                ttfts.append(end - r.arrival_s)
        self._running = [r for r in self._running if r.generated < r.output]
        stats = StepStats(
            step_index=self._step, start_time_s=start, duration_s=duration,
            shape=shape, num_seqs=len(contexts), num_waiting=len(self._waiting),
            num_running=len(self._running), num_free_blocks=max(0, 100_000 - self._used_blocks()),
            num_total_blocks=100_000, num_preempted=0, token_budget=budget.token_budget,
            max_chunk=budget.chunk_limit, first_token_latencies_s=tuple(ttfts), max_token_gap_s=max(gaps, default=0.0),
            budget_reason=budget.reason, predicted_duration_s=budget.predicted_duration_s)
        self._step += 1
        return stats

    def serve_targets_of(self, policy: BudgetPolicy) -> None:
        """Stamp requests with `policy`'s top-level TTFT and TBT targets from now on, as the
        engine stamps them (BudgetPolicy.slo_targets); nothing when it has none."""
        targets = policy.slo_targets()
        if targets is not None:
            self.ttft_s = math.inf if targets.ttft_s is None else targets.ttft_s
            self.tbt_s = math.inf if targets.tbt_s is None else targets.tbt_s

    def run(self, policy: BudgetPolicy, num_steps: int) -> list[StepRecord]:
        """next_state -> decide -> step -> observe, `num_steps` times; requests are due by the
        policy's top-level targets, as the engine would stamp them (BudgetPolicy.slo_targets)."""
        self.serve_targets_of(policy)
        records = []
        for _ in range(num_steps):
            state = self.next_state()
            budget = policy.decide(state)
            stats = self.step(budget)
            policy.observe(stats)
            records.append(StepRecord(state, budget, stats))
        return records

    def _arrive(self) -> None:
        while self._next_arrival <= self.now_s:
            self._waiting.append(_Request(self._next_arrival, self._rng.randint(*self.prompt_tokens),
                                          self._rng.randint(*self.output_tokens)))
            self._next_arrival += self._rng.expovariate(self.arrival_rate_per_s)

    def _used_blocks(self) -> int:
        return sum(-(-(r.computed + r.generated) // 16) for r in self._running)
