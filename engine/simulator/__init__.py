"""The simulator: the engine's own scheduler, policy and loop, with a latency model and a virtual
clock in place of the model."""

from typing import Any

_EXPORTS = {
    "VirtualClock": "clock", "DUMMY_TOKEN": "executor", "SimulatedExecutor": "executor",
    "BudgetStats": "result", "Percentiles": "result", "SimulationResult": "result", "SloReport": "result", "UNCLASSED": "result",
    "ArrivingRequest": "run", "drive": "run", "simulate": "run",
    "simulate_replicas": "replicas",
    "PercentileCheck": "slo", "check_percentile": "slo",
    "SloTargets": "adaptive_sarathi.engine.slo_targets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so that the load generator can judge SLOs with engine.simulator.slo without loading
    # the engine loop (and torch).
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adaptive_sarathi.engine.simulator' has no attribute {name!r}")
    import importlib

    module = _EXPORTS[name]
    return getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
