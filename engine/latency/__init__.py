"""Step-latency models: how long an iteration of a given shape takes on a given GPU and model.

The roofline model lives in `adaptive_sarathi.engine.latency.roofline`; it is not imported here
because it reads the model presets, whose package loads torch.
"""

from adaptive_sarathi.engine.latency.hardware import GPUS, GpuSpec, gpu_spec
from adaptive_sarathi.engine.latency.linear import LinearLatencyModel
from adaptive_sarathi.engine.latency.profile import ProfileLatencyModel, ProfileRow, load_profile, save_profile
from adaptive_sarathi.engine.latency.replay import ReplayLatencyModel
from adaptive_sarathi.engine.latency.shape import LatencyModel, StepShape

__all__ = ["GPUS", "GpuSpec", "LatencyModel", "LinearLatencyModel", "ProfileLatencyModel", "ProfileRow",
           "ReplayLatencyModel", "StepShape", "gpu_spec", "load_profile", "save_profile"]
