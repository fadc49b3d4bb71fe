"""A replica's forecast of a new request's first-token time, for a router in front of replicas.

Read-only: building a snapshot changes nothing the engine schedules, and nothing here feeds back
into the engine's own admission (BudgetPolicy.admits). The forecast is the controller's own view:
the prompt tokens the scheduler would serve ahead of a new request (the EngineState's prefill
queue, in the scheduler's deadline order), drained at the prompt rate the budget policy last
planned (BudgetPolicy.prefill_rate_tps), or, for a policy that plans none, at the rate observed
over recent steps (PrefillRate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import PREFILL_QUEUE_LEN, EngineState, StepStats


class PrefillRate:
    """Prompt tokens per second of executor time, an exponential average over the steps that ran
    prompt tokens (half-life `halflife_steps`). None before such a step. Feed it StepStats
    (an engine stats listener); it keeps only its own average."""

    def __init__(self, halflife_steps: float = 32.0):
        if not halflife_steps > 0:
            raise ValueError(f"halflife_steps={halflife_steps!r} is invalid: use a number of steps > 0")
        self._keep = 0.5 ** (1.0 / halflife_steps)
        self._tokens = 0.0
        self._seconds = 0.0

    def __call__(self, stats: StepStats) -> None:
        if stats.num_prefill_tokens > 0 and stats.duration_s > 0:
            # Tokens and seconds are averaged apart, so a long step weighs as its time says.
            self._tokens = self._keep * self._tokens + stats.num_prefill_tokens
            self._seconds = self._keep * self._seconds + stats.duration_s

    @property
    def tokens_per_s(self) -> float | None:
        return self._tokens / self._seconds if self._seconds > 0 else None


@dataclass(frozen=True)
class ReplicaSnapshot:
    """What one replica publishes to the router (times on that replica's engine clock, seconds).

    prefill_queue: (TTFT deadline s, pending prompt tokens, computed tokens) of the first
    PREFILL_QUEUE_LEN requests with prompt work, in the order the scheduler serves them (as
    EngineState.prefill_queue); overflow_tokens: pending prompt tokens of the requests past them.
    prefill_rate_tps: prompt tokens per second the replica drains (None: not known yet).
    relegates_late: whether requests past their TTFT deadline are served after the others (then
    they are not ahead of a new request). tbt_slack_s: the tightest running decode's TBT target
    less its wait (inf without decodes or TBT targets). num_outstanding: requests held, running or
    waiting. kv_utilization: fraction of KV blocks in use (llm-d's gauge). busy_until_s: when the
    step in flight ends (now_s when idle); a forecast counts from there.
    """

    now_s: float
    prefill_queue: tuple[tuple[float, int, int], ...]
    overflow_tokens: int
    prefill_rate_tps: float | None
    relegates_late: bool
    tbt_slack_s: float
    num_outstanding: int
    num_waiting: int
    kv_utilization: float
    targets: SloTargets | None
    busy_until_s: float | None = None

    @property
    def queued_prefill_tokens(self) -> int:
        """Every pending prompt token the replica holds (llm-d's queue, in tokens)."""
        return sum(p for _, p, _ in self.prefill_queue) + self.overflow_tokens

    def ttft_target_s(self, slo_class: str | None) -> float | None:
        """The TTFT target of `slo_class` on this replica (None when undeclared). Raises
        ValueError naming the known classes for a class its SLO does not declare."""
        if self.targets is None:
            return None
        return self.targets.targets_for(slo_class).ttft_s

    def tokens_ahead(self, deadline_s: float) -> int:
        """Pending prompt tokens served before a new request with TTFT deadline `deadline_s`:
        admitted prefills (computed tokens > 0), and waiting requests whose deadline is no later
        (the scheduler's deadline order; all of them when no deadlines are stamped), less those
        already late where the replica relegates them; plus everything past the listed queue."""
        now = self.now_s
        ahead = self.overflow_tokens
        for deadline, pending, computed in self.prefill_queue:
            if computed > 0 or (deadline <= deadline_s and not (self.relegates_late and deadline < now)):
                ahead += pending
        return ahead

    def predicted_ttft_s(self, num_prompt_tokens: int, slo_class: str | None = None,
                         arrival_s: float | None = None) -> float:
        """Seconds from `arrival_s` (default now_s) to a new request's first token: the step in
        flight, then the tokens ahead and its own at the drain rate. 0 for the tokens when the
        rate is not known yet (the engine has planned nothing: an optimistic answer, as the
        policy's own admission gives)."""
        arrival = self.now_s if arrival_s is None else arrival_s
        target = self.ttft_target_s(slo_class)
        deadline = math.inf if target is None else arrival + target
        start = max(self.now_s if self.busy_until_s is None else self.busy_until_s, arrival)
        rate = self.prefill_rate_tps
        work = 0.0 if not rate else (self.tokens_ahead(deadline) + num_prompt_tokens) / rate
        return start - arrival + work


def snapshot(state: EngineState, policy, observed: PrefillRate | None = None,
             busy_until_s: float | None = None) -> ReplicaSnapshot:
    """The ReplicaSnapshot of an engine in `state` served by budget policy `policy` (read, never
    changed): its planned prompt rate where it has one, else `observed`'s."""
    queue = state.prefill_queue
    overflow = 0
    if len(queue) >= PREFILL_QUEUE_LEN:
        overflow = max(0, state.running_prefill_tokens + state.waiting_prefill_tokens - sum(p for _, p, _ in queue))
    rate = policy.prefill_rate_tps()
    if rate is None and observed is not None:
        rate = observed.tokens_per_s
    total = state.num_total_blocks
    return ReplicaSnapshot(
        now_s=state.now_s, prefill_queue=queue, overflow_tokens=overflow, prefill_rate_tps=rate,
        relegates_late=bool(getattr(policy, "relegates_late", False)), tbt_slack_s=state.decode_tbt_slack_s,
        num_outstanding=state.num_running + state.num_waiting, num_waiting=state.num_waiting,
        kv_utilization=(total - state.num_free_blocks) / total if total else 0.0,
        targets=policy.slo_targets(), busy_until_s=busy_until_s)
