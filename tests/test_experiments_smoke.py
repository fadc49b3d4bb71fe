"""Each experiment runs end to end in its --smoke mode (what CI runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Each run is a fresh interpreter that imports torch and builds an engine: seconds apiece.
pytestmark = pytest.mark.slow

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("script,expected", [
    ("sim_speed.py", "requests/s"),
    pytest.param("sim_fidelity.py", "TBT P99", marks=pytest.mark.embedded_model),
    ("capacity_comparison.py", "| sharegpt_8k | strict | deadline |"),
    pytest.param("cpu_vs_transformers.py", "single-request decode", marks=pytest.mark.embedded_model),
    ("tp_step_bench.py", "all-reduce/forward"),
    ("fused_ops_bench.py", "fused ops: "),
    ("sampler_bench.py", "| 4 | temperature 0.8, seeded |"),
    ("e2e_vs_transformers.py", "identical greedy outputs: 4 of 4"),
    ("cpu_threads.py", "threads=1: "),
])
def test_experiment_smoke(script, expected):
    done = subprocess.run([sys.executable, str(EXPERIMENTS / script), "--smoke"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
