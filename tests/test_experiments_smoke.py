"""Each experiment runs end to end in its --smoke mode (what CI runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("script,expected", [
    ("sim_speed.py", "requests/s"),
    ("sim_fidelity.py", "TBT P99"),
    ("capacity_comparison.py", "adaptive / best fixed"),
    ("cpu_vs_transformers.py", "single-request decode"),
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
