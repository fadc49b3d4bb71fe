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
    for fragment in ("TTFT (ms)", "TBT (ms)", "goodput", "tokens/s", "token budget mean 256",
                     "SLO TTFT P99 <= 1000 ms: observed", "SLO TBT P99 <= 50 ms (over every token gap): observed",
                     "of gaps within", "SLO every target holds: "):
        assert fragment in text
    data = json.loads(out.read_text())
    assert data["num_requests"] == 50 and data["config"]["policy"] == "fixed:256"
    slo = data["slo"]
    assert data["budget"]["token_budget_max"] == 256 and 0 < slo["attainment"] <= 1
    assert slo["ttft_p_s"] == data["ttft"]["p99"] and slo["tbt_p_s"] == data["tbt"]["p99"]
    assert slo["ttft_met"] == (slo["ttft_p_s"] <= 1.0) and slo["tbt_met"] == (slo["tbt_p_s"] <= 0.05)
    assert slo["percentiles_met"] == (slo["ttft_met"] and slo["tbt_met"])
    assert ("holds" if slo["ttft_met"] else "MISSED") in text.split("SLO TTFT")[1].splitlines()[0]


def test_capacity_writes_capacity_and_goodput(tmp_path, trace, capsys):
    out = tmp_path / "cap.json"
    rc = main(["capacity", "--trace", str(trace), "--num-requests", "60", "--qps", "4", "--roofline", "a100:llama-2-7b",
               "--scheduler", "vllm", "--policy", "fixed:4096", "--slo", "ttft:2000,tbt:40", "--tolerance", "0.1",
               "--json", str(out), "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["slo_capacity_qps"] > 0 and data["capacity_qps"] > 0 and data["goodput_qps"] > 0
    assert data["wall_time_s"] > 0 and data["definitions"]["capacity_qps"].startswith("proxy")
    assert (data["ttft_slo_s"], data["ttft_percentile"], data["tbt_slo_s"]) == (2.0, 99, 0.04)
    assert all({"ttft_p_s", "tbt_p_s", "meets_slo"} <= set(p) for p in data["probes"])
    text = capsys.readouterr().out
    assert text.startswith(f"SLO capacity {data['slo_capacity_qps']:.3g} qps")
    assert "proxy capacity" in text and f"search: {len(data['probes'])} simulations" in text


def test_replay_simulates_exactly_the_recorded_requests(tmp_path, capsys):
    from adaptive_sarathi.cli import build_parser
    from adaptive_sarathi.sim_cli import _workload

    recorded = [(0.0, 300, 5), (0.25, 40, 12), (0.1, 900, 3)]
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps({"requests": [
        {"arrival_s": t, "prompt_len": p, "output_len": o, "success": True, "ttft_s": 0.1, "itl_s": [0.01] * (o - 1)}
        for t, p, o in recorded]}))
    args = build_parser().parse_args(["simulate", "--replay", str(bench_json), "--roofline", "h100:llama-3-8b"])
    got = [(r.arrival_time_s, r.num_prompt_tokens, r.num_output_tokens) for r in _workload(args).generate()]
    assert got == sorted(recorded)
    out = tmp_path / "sim.json"
    assert main(["simulate", "--replay", str(bench_json), "--roofline", "h100:llama-3-8b", "--json", str(out),
                 "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["num_requests"] == 3 and data["config"]["replay"] == str(bench_json)
    assert data["tokens_per_s"] * data["makespan_s"] == pytest.approx(sum(p + o for _, p, o in recorded))


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
    (["simulate", "--trace", "TRACE", "--qps", "1", "--max-total-len", "10", "--roofline", "h100:llama-3-8b"],
     "fits max_total_len=10"),
    (["simulate", "--workload", "WORKLOAD", "--max-total-len", "500", "--roofline", "h100:llama-3-8b"],
     "--max-total-len: only for --trace"),
    (["simulate", "--replay", "TRACE", "--trace", "TRACE", "--roofline", "h100:llama-3-8b"], "exactly one workload"),
    (["simulate", "--replay", "TRACE", "--roofline", "h100:llama-3-8b"], "not valid JSON"),
])
def test_bad_flags_exit_2_with_the_fix(argv, message, trace, workload, capsys):
    argv = [str(trace) if a == "TRACE" else str(workload) if a == "WORKLOAD" else a for a in argv]
    assert main(argv + ["--no-progress"]) == 2
    assert message in capsys.readouterr().err


CLASSED = """
phases:
  - mix:
      - {synthetic: {prompt: {dist: uniform, low: 100, high: 900}, output: 32}, share: 3, slo_class: interactive}
      - {synthetic: {prompt: 3000, output: 16}, share: 1, slo_class: batch}
    qps: 4
    num_requests: 60
"""


def test_simulate_and_capacity_print_one_line_per_class(tmp_path, capsys):
    path = tmp_path / "classed.yaml"
    path.write_text(CLASSED)
    out = tmp_path / "sim.json"
    common = ["--workload", str(path), "--roofline", "h100:llama-3-8b", "--slo-policy", "llama-3-8b-h100-tiered",
              "--no-progress"]
    assert main(["simulate", *common, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    lines = {name: next(line for line in text.splitlines() if line.startswith(f"SLO class {name} "))
             for name in ("interactive", "batch")}
    assert "TTFT P90" in lines["interactive"] and "<= 1000 ms" in lines["interactive"]
    assert "<= 30000 ms" in lines["batch"] and "TBT P99" in lines["batch"] and "<= 325 ms" in lines["batch"]
    assert "SLO every class meets its targets: " in text and "SLO TTFT P90 <= 2000 ms" not in text
    slo = json.loads(out.read_text())["slo"]
    assert set(slo["per_class"]) == {"interactive", "batch"}
    assert sum(c["num_requests"] for c in slo["per_class"].values()) == 60
    assert slo["percentiles_met"] == all(c["percentiles_met"] for c in slo["per_class"].values())
    assert slo["per_class"]["batch"]["targets"]["ttft_s"] == 30.0

    cap = tmp_path / "cap.json"
    assert main(["capacity", *common, "--tolerance", "0.2", "--json", str(cap)]) == 0
    text = capsys.readouterr().out
    data = json.loads(cap.read_text())
    assert set(data["per_class"]) == {"interactive", "batch"} and data["slo_capacity_qps"] > 0
    at = f"  at {data['slo_capacity_qps']:.3g} qps: SLO class"
    assert sum(line.startswith(at) for line in text.splitlines()) == 2
    assert all(c["ttft_met"] and c["tbt_met"] for c in data["per_class"].values())


def test_a_workload_class_the_policy_lacks_exits_2(tmp_path, capsys):
    path = tmp_path / "classed.yaml"
    path.write_text(CLASSED)
    assert main(["simulate", "--workload", str(path), "--roofline", "h100:llama-3-8b", "--slo-policy",
                 "llama-3-8b-h100-strict", "--no-progress"]) == 2
    assert "are not in SLO policy 'llama-3-8b-h100-strict'" in capsys.readouterr().err
