"""Closed-loop correction of a latency target from what the engine actually delivered."""

from __future__ import annotations

from adaptive_sarathi.controller.rolling_quantile import RollingQuantile


class QuantileFeedback:
    """A factor on a time target: 1 / (the q-quantile of observed / planned latency over the last
    `window` samples), clamped to [min_factor, max_factor]; 1.0 until `min_samples` are held.

    `planned` is what the controller aimed for when it acted (e.g. the gap it budgeted for the
    tightest decode), so the ratio measures only what the plan missed: engine overhead outside the
    step, a miscalibrated tail. Recomputed from the window every sample, it has no integral state
    to wind up after a burst of violations.
    """

    def __init__(self, quantile: float, window: int = 256, min_samples: int = 32,
                 min_factor: float = 0.5, max_factor: float = 1.0):
        if not 0 < quantile <= 1 or not 0 < min_factor <= 1.0 <= max_factor or min_samples < 1:
            raise ValueError("QuantileFeedback needs quantile in (0, 1], min_factor in (0, 1], "
                             "max_factor >= 1 and min_samples >= 1")
        self.quantile = quantile
        self.min_samples = min_samples
        self.min_factor = min_factor
        self.max_factor = max_factor
        self.factor = 1.0
        self._ratios = RollingQuantile(window)

    def update(self, observed_s: float, planned_s: float) -> None:
        """Add one observation (seconds; planned_s > 0, others are ignored) and refresh `factor`."""
        if planned_s <= 0:
            return
        self._ratios.update(observed_s / planned_s)
        if len(self._ratios) >= self.min_samples:
            miss = self._ratios.quantile(self.quantile)
            self.factor = self.max_factor if miss <= 0 else min(max(1.0 / miss, self.min_factor), self.max_factor)
