"""How a percentile target is judged over a sample (the targets: engine/slo_targets.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class PercentileCheck:
    """One target judged over one sample. observed_s: the sample's percentile-th value (numpy's
    default linear interpolation, as vLLM's and inference-perf's reports compute it; inf when the
    tail holds infinite values, NaN for an empty sample). met: observed_s <= target_s (True for an
    empty sample: nothing missed). within: the fraction of samples <= target_s (1.0 when empty)."""

    target_s: float
    percentile: float
    observed_s: float
    met: bool
    within: float


def check_percentile(samples_s: np.ndarray, target_s: float, percentile: float) -> PercentileCheck:
    """Judge `percentile`% of `samples_s` (seconds, no NaN; +inf for a sample that never came,
    such as a failed request's TTFT) against `target_s`. Reads, never mutates, the array."""
    samples = np.asarray(samples_s, dtype=float)
    if len(samples) == 0:
        return PercentileCheck(target_s, percentile, math.nan, True, 1.0)
    with np.errstate(invalid="ignore"):
        observed = float(np.percentile(samples, percentile))
    if math.isnan(observed):  # interpolating between two infinite values gives inf - inf
        observed = math.inf
    return PercentileCheck(target_s, percentile, observed, observed <= target_s,
                           float(np.count_nonzero(samples <= target_s)) / len(samples))
