"""A linear latency model fitted by least squares to the engine's own StepStats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from adaptive_sarathi.engine.latency.shape import StepShape

if TYPE_CHECKING:  # stats imports the latency package (StepShape): only the annotation needs StepStats
    from adaptive_sarathi.engine.stats import StepStats

FEATURES = ("intercept", "num_prefill_tokens", "num_decode_tokens", "num_prefill_seqs", "sum_context_tokens")


@dataclass(frozen=True)
class LinearLatencyModel:
    """duration = intercept + sum of coefficient x feature over FEATURES[1:], clamped at 0.
    coefficients are in seconds per unit, in FEATURES order."""

    coefficients: tuple[float, float, float, float, float]

    @classmethod
    def fit(cls, stats: Sequence[StepStats]) -> "LinearLatencyModel":
        """Least-squares fit of duration_s over `stats` (not mutated). Raises ValueError for fewer
        than 2 steps."""
        if len(stats) < 2:
            raise ValueError(f"fitting a latency model needs at least 2 steps, got {len(stats)}: run more steps")
        x = np.array([(1.0, s.num_prefill_tokens, s.num_decode_tokens, s.num_prefill_seqs, s.sum_context_tokens)
                      for s in stats])
        y = np.array([s.duration_s for s in stats])
        return cls(tuple(float(c) for c in np.linalg.lstsq(x, y, rcond=None)[0]))

    def step_time(self, shape: StepShape) -> float:
        c0, cp, cd, cs, cc = self.coefficients
        t = (c0 + cp * shape.num_prefill_tokens + cd * shape.num_decode_tokens + cs * shape.num_prefill_seqs
             + cc * shape.sum_context_tokens)
        return t if t > 0.0 else 0.0
