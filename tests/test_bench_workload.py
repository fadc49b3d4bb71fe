"""bench without a server: it draws the requests simulate draws for the same flags, records them so
that simulate --replay serves the same ones, and judges SLO targets at their percentiles."""

from __future__ import annotations

import json

import pytest

from adaptive_sarathi.bench.client import RequestResult
from adaptive_sarathi.bench.record import read_requests, write_json
from adaptive_sarathi.bench.report import format_report, summarize
from adaptive_sarathi.bench.run import BenchResult
from adaptive_sarathi.bench.slo import judge_slo, parse_slo, slo_from_flags
from adaptive_sarathi.bench.workload import draw_workload, make_requests
from adaptive_sarathi.cli import bench_config, build_parser, main
from adaptive_sarathi.controller.slo import LatencyTarget, SLOPolicyError
from adaptive_sarathi.sim_cli import _workload

WORKLOAD = """
phases:
  - trace: TRACE
    qps: 5
    num_requests: 30
    max_total_len: 600
  - synthetic: {prompt: {dist: uniform, low: 10, high: 90}, output: 7}
    qps: 2
    duration_s: 10
"""


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{37 * i},{3 + i}\n" for i in range(1, 40)))
    return path


@pytest.fixture
def workload(tmp_path, trace):
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD.replace("TRACE", str(trace)))
    return path


def drawn_by_bench(*flags: str):
    return draw_workload(bench_config(build_parser().parse_args(["bench", *flags])))


def drawn_by_simulate(*flags: str):
    args = build_parser().parse_args(["simulate", *flags, "--roofline", "h100:llama-3-8b"])
    return _workload(args).generate()


@pytest.mark.parametrize("flags", [
    ["--trace", "TRACE", "--qps", "3", "--num-requests", "80", "--seed", "7"],
    ["--trace", "TRACE", "--qps", "0.5", "--num-requests", "20", "--seed", "1", "--max-total-len", "700"],
    ["--workload", "WORKLOAD", "--seed", "4"],
])
def test_bench_draws_the_requests_simulate_draws_for_the_same_flags(flags, trace, workload):
    flags = [str(trace) if f == "TRACE" else str(workload) if f == "WORKLOAD" else f for f in flags]
    bench, simulate = drawn_by_bench(*flags), drawn_by_simulate(*flags)
    assert bench == simulate and len(bench) >= 20
    assert len({r.num_prompt_tokens for r in bench}) > 5 and bench[0].arrival_time_s > 0
    if "--max-total-len" in flags:  # both leave out the rows over the limit, the same ones
        assert max(r.num_prompt_tokens + r.num_output_tokens for r in bench) <= 700
    seed_at = flags.index("--seed") + 1
    other_seed = drawn_by_bench(*flags[:seed_at], "99", *flags[seed_at + 1:])
    assert [r.arrival_time_s for r in other_seed] != [r.arrival_time_s for r in bench]


def test_burstiness_is_simulates_cv(trace):
    bench = drawn_by_bench("--trace", str(trace), "--qps", "2", "--num-requests", "30", "--burstiness", "4")
    assert bench == drawn_by_simulate("--trace", str(trace), "--qps", "2", "--num-requests", "30", "--cv", "0.5")


def test_all_at_once_keeps_the_lengths_and_zeroes_the_arrivals(trace):
    at_once = drawn_by_bench("--trace", str(trace), "--num-requests", "25")
    paced = drawn_by_bench("--trace", str(trace), "--num-requests", "25", "--qps", "4")
    assert all(r.arrival_time_s == 0.0 for r in at_once)
    assert [(r.num_prompt_tokens, r.num_output_tokens) for r in at_once] == \
           [(r.num_prompt_tokens, r.num_output_tokens) for r in paced]
    fixed = drawn_by_bench("--input-len", "9", "--output-len", "4", "--num-requests", "3")
    assert [(r.num_prompt_tokens, r.num_output_tokens) for r in fixed] == [(9, 4)] * 3


def test_prompts_are_seeded_token_ids_of_the_drawn_lengths(trace):
    drawn = drawn_by_bench("--trace", str(trace), "--num-requests", "10", "--qps", "5")
    a, b = make_requests(drawn, 50, seed=3), make_requests(drawn, 50, seed=3)
    assert a == b and a != make_requests(drawn, 50, seed=4)
    assert [r.prompt_len for r in a] == [r.num_prompt_tokens for r in drawn]
    assert [r.arrival_s for r in a] == [r.arrival_time_s for r in drawn]
    assert all(0 <= t < 50 for r in a for t in r.prompt)


def test_bench_json_replays_as_the_same_requests(tmp_path, trace):
    flags = ["--trace", str(trace), "--qps", "3", "--num-requests", "40", "--seed", "2", "--slo", "ttft:500@p90"]
    config = bench_config(build_parser().parse_args(["bench", *flags, "--json", str(tmp_path / "b.json")]))
    sent = make_requests(draw_workload(config), 500, config.seed)
    # Answered in reverse order, as a server may finish them: the file is in arrival order.
    results = [RequestResult(r.prompt_len, r.output_len, arrival_s=r.arrival_s, start_s=r.arrival_s,
                             success=True, ttft_s=0.2, e2e_s=0.2 + 0.01 * (r.output_len - 1),
                             itl_s=[0.01] * (r.output_len - 1), output_tokens=r.output_len) for r in reversed(sent)]
    write_json(config.json_path, config, BenchResult(summarize(results, 10.0, config.slo), results))
    document = json.loads((tmp_path / "b.json").read_text())
    assert document["config"]["slo"] == {"ttft": {"target_ms": 500.0, "percentile": 90.0}}
    assert {"arrival_s", "prompt_len", "output_len", "ttft_s", "itl_s", "success"} <= set(document["requests"][0])
    assert read_requests(config.json_path) == draw_workload(config)
    replayed = drawn_by_simulate("--replay", config.json_path)
    assert replayed == draw_workload(config)


CLASSED_WORKLOAD = """
phases:
  - mix:
      - {trace: TRACE, share: 2, slo_class: interactive}
      - {synthetic: {prompt: 900, output: 5}, share: 1, slo_class: batch}
    qps: 5
    num_requests: 40
"""


def test_bench_json_records_each_requests_class_for_replay(tmp_path, trace):
    path = tmp_path / "classed.yaml"
    path.write_text(CLASSED_WORKLOAD.replace("TRACE", str(trace)))
    flags = ["--workload", str(path), "--seed", "3"]
    drawn = drawn_by_bench(*flags)
    assert drawn == drawn_by_simulate(*flags) and {r.slo_class for r in drawn} == {"interactive", "batch"}
    config = bench_config(build_parser().parse_args(["bench", *flags, "--json", str(tmp_path / "b.json")]))
    sent = make_requests(drawn, 500, config.seed)
    assert [r.slo_class for r in sent] == [r.slo_class for r in drawn]
    results = [RequestResult(r.prompt_len, r.output_len, arrival_s=r.arrival_s, success=True,
                             ttft_s=0.1, output_tokens=r.output_len, slo_class=r.slo_class) for r in sent]
    write_json(config.json_path, config, BenchResult(summarize(results, 10.0, config.slo), results))
    document = json.loads((tmp_path / "b.json").read_text())
    assert [r["slo_class"] for r in document["requests"]] == [r.slo_class for r in drawn]
    assert read_requests(config.json_path) == drawn_by_simulate("--replay", config.json_path) == drawn
    # A file written before requests carried a class replays them with the top-level targets.
    for record in document["requests"]:
        del record["slo_class"]
    (tmp_path / "old.json").write_text(json.dumps(document))
    assert {r.slo_class for r in read_requests(tmp_path / "old.json")} == {None}


def result(ttft: float, gaps: list[float], success: bool = True) -> RequestResult:
    return RequestResult(10, len(gaps) + 1, success=success, ttft_s=ttft, e2e_s=ttft + sum(gaps), itl_s=gaps,
                         output_tokens=len(gaps) + 1 if success else 0)


def test_targets_are_judged_at_their_percentile_tbt_over_every_gap():
    # Request 0 has 9 fast gaps; request 1 one slow gap. Per gap, 9 of 10 are fast: P80 holds,
    # although half the requests (by their own P80 gap) miss.
    results = [result(0.1, [0.01] * 9), result(0.3, [0.5])]
    slo = parse_slo("ttft:200@p50,tbt:20@p80")
    judged = judge_slo(results, slo)
    assert judged["ttft"]["observed_ms"] == pytest.approx(200.0) and judged["ttft"]["met"]
    assert judged["ttft"]["attainment"] == 0.5
    assert judged["tbt"]["observed_ms"] == pytest.approx(10.0) and judged["tbt"]["met"]
    assert judged["tbt"]["gap_attainment"] == pytest.approx(0.9) and judged["tbt"]["attainment"] == 0.5
    strict = judge_slo(results, parse_slo("tbt:20@p95"))  # the 95th gap is the interpolated slow one
    assert not strict["tbt"]["met"] and strict["tbt"]["observed_ms"] > 20


def test_a_failed_request_misses_every_target():
    results = [result(0.1, [0.01]), result(0.0, [], success=False)]
    judged = judge_slo(results, parse_slo("ttft:1000@p90,tbt:100,e2el:5000@p50,tpot:50"))
    assert judged["ttft"]["observed_ms"] is None and not judged["ttft"]["met"]  # inf in the tail
    assert judged["e2el"]["met"] is False and judged["tpot"]["attainment"] == 0.5
    summary = summarize(results, 2.0, parse_slo("ttft:1000@p90,tbt:100"))
    assert summary["slo_met"] is False and summary["goodput"] == 0.5 and summary["slo_attainment"] == 0.5
    text = format_report(summary)
    assert "ttft P90 (ms)" in text and "inf MISSED" in text and "Every SLO target holds" in text


def test_bench_slo_flags_share_the_serve_syntax():
    assert parse_slo("ttft:2000@p90,tbt:65,tpot:40@p50") == {
        "ttft": LatencyTarget(2000, 90), "tbt": LatencyTarget(65, 99), "tpot": LatencyTarget(40, 50)}
    with pytest.raises(SLOPolicyError, match="`e2el:MS`"):
        parse_slo("latency:5")
    with pytest.raises(SLOPolicyError, match="ttft.percentile"):
        parse_slo("ttft:100@p120")
    strict = slo_from_flags(None, "llama-3-8b-h100-strict")
    assert set(strict) == {"ttft", "tbt"} and all(isinstance(t, LatencyTarget) for t in strict.values())
    with pytest.raises(ValueError, match="not both"):
        slo_from_flags("ttft:1", "llama-3-8b-h100-strict")


@pytest.mark.parametrize("argv,message", [
    (["--workload", "WORKLOAD", "--qps", "3"], "--qps: only for --trace"),
    (["--workload", "WORKLOAD", "--burstiness", "2"], "--burstiness: only for --trace"),
    (["--trace", "TRACE", "--input-len", "5"], "--input-len: only for synthetic lengths"),
    (["--max-total-len", "50"], "--max-total-len: only with --trace"),
    (["--trace", "TRACE", "--max-total-len", "10"], "fits max_total_len=10"),
    (["--slo", "ttft:1", "--slo-policy", "llama-3-8b-h100-strict"], "not both"),
    (["--slo", "latency:5"], "ttft"),
])
def test_bad_bench_flags_exit_2_before_sending(argv, message, trace, workload, capsys):
    argv = [str(trace) if a == "TRACE" else str(workload) if a == "WORKLOAD" else a for a in argv]
    # Port 9 (discard) is never contacted: the flags fail first.
    assert main(["bench", "--base-url", "http://127.0.0.1:9", "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err


def test_conversation_prompts_keep_their_token_ids_so_turns_share_prefixes(tmp_path):
    path = tmp_path / "conv.yaml"
    path.write_text("conversations: {num_conversations: 3, conversation_qps: 1, turns: 3, user_tokens: 20, "
                    "output_tokens: 10, system_prompt_tokens: 32}\n")
    drawn = drawn_by_bench("--workload", str(path))
    requests = make_requests(drawn, 1000, seed=0)
    assert [r.prompt for r in requests] == [list(r.prompt_token_ids) for r in drawn]
    assert len({tuple(r.prompt[:32]) for r in requests}) == 1  # one shared system prompt
