"""Step-latency models: how long an iteration of a given shape takes on a given GPU and model."""

from adaptive_sarathi.engine.latency.shape import LatencyModel, StepShape

__all__ = ["LatencyModel", "StepShape"]
