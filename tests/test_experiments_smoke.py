"""Each experiment runs end to end in its --smoke mode (what CI runs)."""

from __future__ import annotations

import json
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
    ("capacity_comparison.py", "| sharegpt_8k | strict | adaptive |"),
    pytest.param("cpu_vs_transformers.py", "single-request decode", marks=pytest.mark.embedded_model),
    ("tp_step_bench.py", "all-reduce/forward"),
    ("fused_ops_bench.py", "fused ops: "),
    ("sampler_bench.py", "| 4 | temperature 0.8, seeded |"),
    ("sampler_options_bench.py", "| 4 | logprobs 5 |"),
    ("e2e_vs_transformers.py", "identical greedy outputs: 4 of 4"),
    ("cpu_threads.py", "threads=1: "),
    ("telemetry_overhead.py", "| observe_step |"),
    ("prefix_caching.py", "Ratio on / off"),
    ("slo_classes.py", "adaptive / best FCFS"),
    pytest.param("seeded_preemption.py", "| reference | 0 | 4 of 4 |", marks=pytest.mark.embedded_model),
    ("cached_prefix_ttft.py", "## TTFT on an engine, and one step of each taken apart"),
    ("replica_routing.py", "| mixed | 2 | headroom |"),
    pytest.param("replica_gpu.py", "| round_robin | 2 |", marks=pytest.mark.embedded_model),
    pytest.param("slo_change_served.py", "| before the change |", marks=pytest.mark.embedded_model),
])
def test_experiment_smoke(script, expected):
    done = subprocess.run([sys.executable, str(EXPERIMENTS / script), "--smoke"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


def test_real_gpu_slo_smoke_writes_a_call_that_merges(tmp_path):
    script = str(EXPERIMENTS / "real_gpu_slo.py")
    done = subprocess.run([sys.executable, script, "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "adaptive @ 8 qps repeat 1: attainment" in done.stdout
    call = json.loads((tmp_path / "real_gpu_slo.json").read_text())
    assert [(r["policy"], r["repeat"]) for r in call["runs"]] == [("fixed:256", 0), ("adaptive", 0),
                                                                  ("fixed:256", 1), ("adaptive", 1)]
    # Repeats serve the same draw; the simulator is deterministic, so its prediction repeats exactly.
    assert call["runs"][0]["sim"] == call["runs"][2]["sim"]
    # decide() runs before every step, and once more each time the engine finds nothing arrived yet.
    assert call["runs"][1]["decide_us"]["count"] >= call["runs"][1]["real"]["num_steps"] > 0
    assert (tmp_path / "real_gpu_slo_profile.csv").read_text().startswith("# ")
    pytest.importorskip("matplotlib")
    results = tmp_path / "merged" / "real_gpu_slo.md"
    done = subprocess.run([sys.executable, script, "--merge", str(tmp_path / "real_gpu_slo.json"),
                           str(tmp_path / "real_gpu_slo.json"), "--results", str(results)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| adaptive | 8 | 4 |" in results.read_text()  # both calls' repeats grouped
    assert (results.parent / "real_gpu_slo_attainment.png").stat().st_size > 1000


def test_real_gpu_slo_refuses_a_plan_over_its_wall_limit():
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "real_gpu_slo.py"), "--smoke", "--max-wall-s", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "over --max-wall-s=1" in done.stderr


def test_render_tuning_dashboard_smoke(prometheus_binary):
    """The phased run behind the tuning picture, on the tiny model: every panel gets data."""
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "render_tuning_dashboard.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 panels" in done.stdout and "empty: none" in done.stdout
