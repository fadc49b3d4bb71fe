"""A latency model that plays back recorded step durations, for replaying a real run exactly."""

from __future__ import annotations

from typing import Sequence

from adaptive_sarathi.engine.latency.shape import StepShape


class ReplayLatencyModel:
    """Returns durations[k] for the k-th step asked about. When `shapes` (the recorded steps'
    shapes) are given, a step whose shape differs from the recording raises ValueError at once,
    naming the step: the replayed schedule has diverged from the recorded one."""

    def __init__(self, durations: Sequence[float], shapes: Sequence[StepShape] | None = None):
        if shapes is not None and len(shapes) != len(durations):
            raise ValueError(f"{len(shapes)} shapes for {len(durations)} durations: record one shape per step")
        self.durations = list(durations)
        self.shapes = None if shapes is None else list(shapes)
        self.num_steps = 0  # steps replayed so far

    def step_time(self, shape: StepShape) -> float:
        """The next recorded duration. Raises IndexError past the end of the recording."""
        k = self.num_steps
        if k >= len(self.durations):
            raise IndexError(f"step {k} asked for, but only {len(self.durations)} steps were recorded")
        if self.shapes is not None and self.shapes[k] != shape:
            raise ValueError(f"step {k}: replayed shape {shape} differs from the recorded {self.shapes[k]}")
        self.num_steps += 1
        return self.durations[k]
