"""SLO targets of a benchmark: the `--slo` shorthand (the serve/simulate syntax, with two more keys),
or an SLO policy's targets, judged per request (goodput) and at each target's percentile.

A percentile target is judged as the simulator judges it (engine.simulator.slo.check_percentile):
TTFT, TPOT and E2E latency at their percentile over requests, TBT at its percentile over every
token gap of every request (per gap, as vLLM and inference-perf count ITL). A failed request
misses every target: it counts as an infinite TTFT, TPOT and E2E latency and one infinite gap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from adaptive_sarathi.controller.slo import LatencyTarget, load_slo_policy, parse_targets
from adaptive_sarathi.engine.simulator.slo import check_percentile

if TYPE_CHECKING:
    from adaptive_sarathi.bench.client import RequestResult

SLO_KEYS = {
    "ttft": "time to first token",
    "tbt": "gap between consecutive tokens (per request for goodput: its own percentile gap)",
    "tpot": "the request's mean time per output token after the first",
    "e2el": "end-to-end latency",
}

# vLLM's `bench serve --goodput` keys: a request is good when it meets every one given.
GOODPUT_KEYS = ("ttft", "tpot", "e2el")


def parse_goodput(pairs: Sequence[str]) -> dict[str, float]:
    """vLLM's `--goodput KEY:MS [KEY:MS ...]` as seconds by key. Raises ValueError naming the
    bad pair."""
    targets: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if not sep or key not in GOODPUT_KEYS or not 0 < ms < math.inf:
            raise ValueError(f"--goodput {pair!r}: use KEY:MS with KEY among {', '.join(GOODPUT_KEYS)} and MS a "
                             "number > 0, e.g. --goodput ttft:500 tpot:50")
        if key in targets:
            raise ValueError(f"--goodput names {key} twice: give each key once")
        targets[key] = ms / 1000
    return targets


def is_good(result: RequestResult, goodput: Mapping[str, float]) -> bool:
    """vLLM's goodput rule: the request succeeded and each of its values is within its target (s)."""
    return result.success and all(request_value_s(result, key) <= target for key, target in goodput.items())


def parse_slo(text: str) -> dict[str, LatencyTarget]:
    """`KEY:MS[@pNN]` pairs separated by commas (default p99), KEY among SLO_KEYS, any subset.
    Raises ValueError (SLOPolicyError) naming the bad part."""
    return parse_targets(text, tuple(SLO_KEYS))


def slo_from_flags(shorthand: str | None, policy: str | None) -> dict[str, LatencyTarget]:
    """The targets of `--slo` or of `--slo-policy NAME|FILE` (its top-level TTFT and TBT), at
    most one of them; {} for neither. Raises ValueError when both are given or either is bad."""
    if shorthand is not None and policy is not None:
        raise ValueError("give --slo or --slo-policy, not both")
    if shorthand is not None:
        return parse_slo(shorthand)
    if policy is not None:
        loaded = load_slo_policy(policy)
        return {"ttft": loaded.ttft, "tbt": loaded.tbt}
    return {}


def request_value_s(result: RequestResult, key: str, percentile: float = 99.0) -> float:
    """The request's value of one SLO key in seconds (for tbt: the `percentile`-th of its own
    gaps, 0 without gaps); inf for a failed request."""
    if not result.success:
        return math.inf
    if key == "ttft":
        return result.ttft_s
    if key == "tbt":
        return float(np.percentile(result.itl_s, percentile)) if result.itl_s else 0.0
    if key == "tpot":
        return result.tpot_s
    return result.e2e_s


def meets_slo(result: RequestResult, targets: Mapping[str, LatencyTarget]) -> bool:
    """Whether a request meets every target (a failed one meets none)."""
    return result.success and all(request_value_s(result, key, t.percentile) <= t.target_s
                                  for key, t in targets.items())


def judge_slo(results: Sequence[RequestResult], targets: Mapping[str, LatencyTarget]) -> dict[str, dict[str, Any]]:
    """Per target key: target_ms, percentile, observed_ms (the value at the percentile; None when
    infinite, i.e. failures reach the tail, or when there is no sample), met (observed within the
    target; True without samples) and attainment (the fraction of requests meeting it); tbt also
    has gap_attainment, the fraction of all gaps within target."""
    report: dict[str, dict[str, Any]] = {}
    for key, target in targets.items():
        check = check_percentile(_samples(results, key), target.target_s, target.percentile)
        entry = {"target_ms": target.target_ms, "percentile": target.percentile,
                 "observed_ms": check.observed_s * 1000 if math.isfinite(check.observed_s) else None,
                 "met": check.met,
                 "attainment": (sum(request_value_s(r, key, target.percentile) <= target.target_s for r in results)
                                / len(results)) if results else 1.0}
        if key == "tbt":
            entry["gap_attainment"] = check.within
        report[key] = entry
    return report


def _samples(results: Sequence[RequestResult], key: str) -> np.ndarray:
    """What the key's percentile is taken over: every gap (tbt) or every request (TPOT: those with
    more than one output token); failed requests as inf."""
    if key == "tbt":
        return np.array([g for r in results for g in (r.itl_s if r.success else [math.inf])], dtype=float)
    if key == "tpot":
        return np.array([request_value_s(r, key) for r in results if not r.success or r.output_tokens > 1])
    return np.array([request_value_s(r, key) for r in results], dtype=float)
