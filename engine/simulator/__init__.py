"""The simulator: the engine's own scheduler, policy and loop, with a latency model and a virtual
clock in place of the model."""

from adaptive_sarathi.engine.simulator.clock import VirtualClock
from adaptive_sarathi.engine.simulator.executor import DUMMY_TOKEN, SimulatedExecutor
from adaptive_sarathi.engine.simulator.result import BudgetStats, Percentiles, SimulationResult, SloReport
from adaptive_sarathi.engine.simulator.run import ArrivingRequest, drive, simulate
from adaptive_sarathi.engine.simulator.slo import SloTargets

__all__ = ["ArrivingRequest", "BudgetStats", "DUMMY_TOKEN", "Percentiles", "SimulatedExecutor", "SimulationResult",
           "SloReport", "SloTargets", "VirtualClock", "drive", "simulate"]
