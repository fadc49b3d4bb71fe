"""Histogram bucket edges of the server metrics: fixed ranges that cover CPU serving (steps and
token gaps of tens of seconds, first tokens of minutes), with every declared SLO target added as
an edge, so attainment at a target is read off a bucket rather than interpolated."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from adaptive_sarathi.engine.slo_targets import SloTargets

# Steps and token gaps: 1 ms (a GPU decode step) to 60 s (a long prefill chunk on a small CPU).
STEP_SECONDS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1,
                0.125, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
                45.0, 60.0)
# First tokens and queue times: fine below a second, then to 10 minutes (an overloaded CPU queue).
TTFT_SECONDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
                2.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0, 160.0, 320.0, 600.0)
# Whole requests: to half an hour.
REQUEST_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                   120.0, 240.0, 480.0, 960.0, 1920.0)
TOKENS = tuple(float(2 ** k) for k in range(18))  # 1 .. 131072 tokens
# Token budgets and chunk sizes: powers of two and the midpoints between them, 8 .. 16384 (budget
# ladders step by a tile of 32 or 128 tokens, so each bucket holds a few ladder rungs).
BUDGET_TOKENS = tuple(sorted({float(2 ** k) for k in range(3, 15)} | {float(3 * 2 ** k) for k in range(2, 13)}))
# Observed / predicted step time: a model within 10% lands in the two buckets around 1.
RATIO = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0)
WAITING_REQUESTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


def target_seconds(targets: SloTargets | None) -> set[float]:
    """Every TTFT and TBT target of `targets` (top level and classes), in seconds."""
    if targets is None:
        return set()
    found = set()
    for t in (targets, *targets.classes.values()):
        found.update(v for v in (t.ttft_s, t.tbt_s) if v is not None)
    return found


@lru_cache(maxsize=1)
def shipped_target_seconds() -> frozenset[float]:
    """The targets of every SLO policy shipped in adaptive_sarathi/slo_policies/ (read once)."""
    from adaptive_sarathi.controller.slo import load_slo_policy, shipped_policy_names

    found: set[float] = set()
    for name in shipped_policy_names():
        found |= target_seconds(load_slo_policy(name).as_targets())
    return frozenset(found)


def with_edges(base: Iterable[float], extra: Iterable[float]) -> tuple[float, ...]:
    """`base` with the `extra` edges added, sorted, without repeats."""
    return tuple(sorted({float(e) for e in base} | {float(e) for e in extra}))


def seconds_edges(base: Iterable[float], targets: SloTargets | None) -> tuple[float, ...]:
    """`base` with every shipped policy's targets and those of `targets` (the policy in force)."""
    return with_edges(base, shipped_target_seconds() | target_seconds(targets))
