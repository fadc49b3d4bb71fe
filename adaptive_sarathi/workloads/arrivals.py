"""Arrival processes: Poisson, or gamma-distributed gaps for burstier (or smoother) traffic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptive_sarathi.workloads.request import WorkloadError

# Gaps are drawn in blocks of this many, always the same, so that the k-th gap of a seeded stream
# is the same whatever the rate or the count asked for: scaling the rate then scales every
# arrival time by the same factor (common random numbers, which keeps a capacity search monotone).
_BLOCK = 4096


@dataclass(frozen=True)
class ArrivalProcess:
    """Requests at mean rate `qps` (per second) with gap coefficient of variation `cv`.

    cv = 1 is a Poisson process (exponential gaps); other values draw gamma gaps of shape 1/cv^2
    (cv > 1 burstier, cv < 1 more regular) with the same mean 1/qps.
    """

    qps: float
    cv: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.qps, (int, float)) or not 0 < self.qps < float("inf"):
            raise WorkloadError(f"qps={self.qps!r} is invalid: use a finite request rate > 0 (requests per second)")
        if not isinstance(self.cv, (int, float)) or not 0 < self.cv < float("inf"):
            raise WorkloadError(f"cv={self.cv!r} is invalid: use a number > 0 (1 = Poisson)")

    def scaled(self, factor: float) -> "ArrivalProcess":
        return ArrivalProcess(self.qps * factor, self.cv)

    def times(self, rng: np.random.Generator, start_s: float, *, num_requests: int | None = None,
              duration_s: float | None = None) -> np.ndarray:
        """Arrival times after `start_s`: the first `num_requests`, or all before start_s +
        duration_s (exactly one of the two). Consumes `rng`."""
        if (num_requests is None) == (duration_s is None):
            raise ValueError("give exactly one of num_requests and duration_s")
        blocks: list[np.ndarray] = []
        total = 0.0
        count = 0
        while True:
            gaps = self._unit_gaps(rng)
            blocks.append(gaps)
            count += len(gaps)
            total += float(gaps.sum())
            if (num_requests is not None and count >= num_requests) or (
                    duration_s is not None and total / self.qps >= duration_s):
                break
        times = start_s + np.cumsum(np.concatenate(blocks)) / self.qps
        if num_requests is not None:
            return times[:num_requests]
        return times[times < start_s + duration_s]

    def _unit_gaps(self, rng: np.random.Generator) -> np.ndarray:
        """A block of gaps with mean 1."""
        if self.cv == 1.0:
            return rng.standard_exponential(_BLOCK)
        shape = 1.0 / (self.cv * self.cv)
        return rng.gamma(shape, 1.0 / shape, _BLOCK)
