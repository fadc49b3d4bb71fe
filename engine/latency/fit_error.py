"""How far a latency model's predictions are from measured steps, by kind of step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from adaptive_sarathi.engine.latency.profile import ProfileRow
from adaptive_sarathi.engine.latency.shape import LatencyModel


@dataclass(frozen=True)
class RatioError:
    """Median and P90 of |observed / predicted - 1| over `count` steps (NaN for none; inf where
    the model predicted 0 s for a step that took time)."""

    count: int
    median: float
    p90: float

    def __str__(self) -> str:
        if not self.count:
            return "no steps"
        return f"median {self.median:.3f} p90 {self.p90:.3f} (n={self.count})"


@dataclass(frozen=True)
class FitError:
    """RatioError of decode-only steps and of mixed steps (those with a prefill chunk, with
    decodes or without)."""

    decode: RatioError
    mixed: RatioError

    def __str__(self) -> str:
        return f"decode-only {self.decode}; mixed {self.mixed}"


def fit_error(model: LatencyModel, rows: Sequence[ProfileRow]) -> FitError:
    """The model's errors over measured `rows` (not mutated)."""
    groups: dict[bool, list[float]] = {False: [], True: []}
    for r in rows:
        predicted = model.step_time(r.shape)
        if predicted > 0:
            error = abs(r.duration_s / predicted - 1.0)
        else:
            error = 0.0 if r.duration_s == 0 else math.inf
        groups[r.shape.num_prefill_seqs > 0].append(error)
    return FitError(_summary(groups[False]), _summary(groups[True]))


def _summary(errors: list[float]) -> RatioError:
    if not errors:
        return RatioError(0, math.nan, math.nan)
    errors = sorted(errors)
    return RatioError(len(errors), _percentile(errors, 50), _percentile(errors, 90))


def _percentile(ordered: list[float], q: float) -> float:
    """numpy's default (linear) percentile of sorted values, inf-safe (numpy gives NaN there)."""
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    frac = position - low
    if frac == 0:
        return ordered[low]
    a, b = ordered[low], ordered[low + 1]
    return a + (b - a) * frac
