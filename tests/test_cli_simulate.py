"""`adaptive-sarathi simulate` and `capacity` on small inputs, and their errors."""

from __future__ import annotations

import json

import pytest

from adaptive_sarathi.cli import main

WORKLOAD = """
phases:
  - synthetic: {prompt: {dist: uniform, low: 100, high: 900}, output: {dist: uniform, low: 8, high: 64}}
    qps: 4
    num_requests: 40
  - synthetic: {prompt: 3000, output: 16}
    qps: 1
    num_requests: 10
"""


@pytest.fixture
def workload(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD)
    return path


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{50 * i},{i}\n" for i in range(1, 30)))
    return path


def test_simulate_prints_the_summary_and_writes_json(tmp_path, workload, capsys):
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--workload", str(workload), "--roofline", "h100:llama-3-8b", "--policy", "fixed:256",
               "--slo", "ttft:1000,tbt:50", "--json", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    for fragment in ("TTFT (ms)", "TBT (ms)", "attainment", "goodput", "tokens/s", "token budget mean 256"):
        assert fragment in text
    data = json.loads(out.read_text())
    assert data["num_requests"] == 50 and data["config"]["policy"] == "fixed:256"
    assert data["budget"]["token_budget_max"] == 256 and 0 <= data["slo"]["attainment"] <= 1


def test_capacity_writes_capacity_and_goodput(tmp_path, trace, capsys):
    out = tmp_path / "cap.json"
    rc = main(["capacity", "--trace", str(trace), "--num-requests", "60", "--qps", "4", "--roofline", "a100:llama-2-7b",
               "--scheduler", "vllm", "--policy", "fixed:4096", "--slo", "ttft:2000,tbt:40", "--tolerance", "0.1",
               "--json", str(out), "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["capacity_qps"] > 0 and data["goodput_qps"] > 0
    assert "capacity" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["simulate", "--roofline", "h100:llama-3-8b"], "give exactly one workload"),
    (["simulate", "--trace", "TRACE", "--roofline", "h100:llama-3-8b"], "--trace needs --qps"),
    (["simulate", "--workload", "WORKLOAD", "--qps", "2", "--roofline", "h100:llama-3-8b"], "--qps: only for --trace"),
    (["simulate", "--trace", "TRACE", "--qps", "1"], "give exactly one latency model"),
    (["simulate", "--trace", "TRACE", "--qps", "1", "--roofline", "h100"], "use GPU:ARCH"),
    (["simulate", "--trace", "TRACE", "--qps", "1", "--roofline", "h100:llama-3-8b", "--policy", "fixd:1"],
     "unknown policy 'fixd'"),
    (["simulate", "--trace", "TRACE", "--qps", "1", "--roofline", "h100:llama-3-8b", "--slo", "ttft:1"], "tbt"),
    (["simulate", "--trace", "TRACE", "--qps", "-1", "--roofline", "h100:llama-3-8b"], "qps=-1.0 is invalid"),
    (["simulate", "--trace", "no_such_trace", "--qps", "1", "--roofline", "h100:llama-3-8b"], "not found"),
    (["simulate", "--trace", "TRACE", "--qps", "1", "--roofline", "h100:llama-3-8b", "--max-model-len", "100"],
     "raise max_model_len"),
    (["capacity", "--trace", "TRACE", "--roofline", "h100:llama-3-8b"], "capacity needs SLO targets"),
])
def test_bad_flags_exit_2_with_the_fix(argv, message, trace, workload, capsys):
    argv = [str(trace) if a == "TRACE" else str(workload) if a == "WORKLOAD" else a for a in argv]
    assert main(argv + ["--no-progress"]) == 2
    assert message in capsys.readouterr().err
