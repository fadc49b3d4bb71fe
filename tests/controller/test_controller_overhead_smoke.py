"""experiments/controller_overhead.py --smoke runs and prints a row per policy."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "controller_overhead.py"


def test_controller_overhead_smoke():
    r = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--steps", "100"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "us" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "fixed:512", "two_level", "slack", "slack (prior)", "adaptive", "adaptive (prior)"]
