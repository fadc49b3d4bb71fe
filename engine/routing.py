"""Routing policies: which replica serves a new request, from the replicas' snapshots alone.

Each policy is a pure function `(snapshots, request) -> RouteDecision`: it reads the snapshots
(engine/queue_forecast.py) and the request's facts, keeps no state and mutates nothing, so the
simulator and the Ray Serve ingress route by the same code.

- round_robin: replica `request.sequence % N`, blind to load.
- least_outstanding: fewest requests held (running + waiting); ties to the fewest queued prompt
  tokens, then the lowest index.
- headroom: the replica whose forecast first-token time (ReplicaSnapshot.predicted_ttft_s)
  leaves the most slack under the request's class TTFT target (less `margin` of it); ties to the
  most TBT slack. None when no replica is forecast to meet the target: the caller refuses the
  request (429) instead of queueing it where it would miss. Without a TTFT target, the replica
  with the soonest forecast first token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from adaptive_sarathi.engine.queue_forecast import ReplicaSnapshot


@dataclass(frozen=True)
class RouteRequest:
    """A request to place. num_prompt_tokens: its prompt length (an estimate where the router
    cannot tokenize); sequence: how many requests the router placed before it (round robin's turn);
    arrival_s: when it arrived, on the replicas' clock (None: each replica's now)."""

    num_prompt_tokens: int
    slo_class: str | None = None
    sequence: int = 0
    arrival_s: float | None = None


@dataclass(frozen=True)
class RouteDecision:
    """replica: the chosen index, or None to refuse the request. predicted_ttft_s: the chosen
    (for a refusal: the best) replica's forecast, where the policy made one; reason: free text."""

    replica: int | None
    predicted_ttft_s: float | None = None
    reason: str = ""


Policy = Callable[[Sequence[ReplicaSnapshot], RouteRequest], RouteDecision]


def round_robin(snapshots: Sequence[ReplicaSnapshot], request: RouteRequest) -> RouteDecision:
    _check(snapshots)
    return RouteDecision(request.sequence % len(snapshots), reason="turn")


def least_outstanding(snapshots: Sequence[ReplicaSnapshot], request: RouteRequest) -> RouteDecision:
    _check(snapshots)
    best = min(range(len(snapshots)),
               key=lambda i: (snapshots[i].num_outstanding, snapshots[i].queued_prefill_tokens, i))
    return RouteDecision(best, reason="fewest outstanding")


def headroom(snapshots: Sequence[ReplicaSnapshot], request: RouteRequest, margin: float = 0.0) -> RouteDecision:
    """See the module docstring. Raises ValueError for a class a replica's SLO does not declare."""
    _check(snapshots)
    best, best_key, best_ttft = 0, None, math.inf
    target = None
    for i, snap in enumerate(snapshots):
        ttft = snap.predicted_ttft_s(request.num_prompt_tokens, request.slo_class, request.arrival_s)
        target = snap.ttft_target_s(request.slo_class)
        slack = (math.inf if target is None else target * (1.0 - margin)) - ttft
        key = (-ttft if target is None else slack, snap.tbt_slack_s, -i)
        if best_key is None or key > best_key:
            best, best_key, best_ttft = i, key, ttft
    if target is not None and best_key[0] < 0:
        return RouteDecision(None, best_ttft, "no replica meets the TTFT target")
    return RouteDecision(best, best_ttft, "most TTFT slack")


POLICIES: dict[str, Policy] = {"round_robin": round_robin, "least_outstanding": least_outstanding,
                               "headroom": headroom}


def get_policy(name: str) -> Policy:
    """The routing policy called `name`. Raises ValueError naming the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"routing={name!r} is unknown: use one of {', '.join(POLICIES)}") from None


def _check(snapshots: Sequence[ReplicaSnapshot]) -> None:
    if not snapshots:
        raise ValueError("no replica to route to: start at least one replica")
