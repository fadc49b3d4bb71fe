"""The server fuzzer's --smoke run passes: 300 hostile and valid requests against the served
default model, no 5xx, no engine death, every valid request answered, a clean exit."""

import subprocess
import sys
from pathlib import Path

import pytest

FUZZER = Path(__file__).resolve().parents[2] / "experiments" / "fuzz_server.py"


@pytest.mark.slow
def test_fuzz_server_smoke():
    done = subprocess.run([sys.executable, str(FUZZER), "--smoke"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| 5xx responses | 0 (must be 0) |" in done.stdout
    assert "| engine deaths | 0 (must be 0) |" in done.stdout
