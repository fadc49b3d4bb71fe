"""`adaptive-sarathi bench` against the running server: sensible numbers, and client-side TTFT
within a loopback hop of the server's own TTFT histogram over the same requests."""

import json
import subprocess
import sys

import numpy as np
import pytest

M = "adaptive_sarathi:"


@pytest.fixture(scope="module")
def server(serve):
    with serve() as s:
        yield s


def run_bench(server, tmp_path, *args):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "adaptive_sarathi.cli", "bench", "--base-url", server.url,
                             "--prompts", "token-ids", "--json", str(out), "--seed", "1", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result


def test_bench_ttft_matches_the_server_histogram(server, tmp_path):
    before = server.metrics()
    doc, result = run_bench(server, tmp_path, "--num-requests", "40", "--qps", "40", "--input-len", "48",
                            "--output-len", "8", "--slo", "ttft:2000@p90,tbt:100")
    after = server.metrics()
    summary = doc["summary"]
    assert summary["completed"] == 40 and summary["failed"] == 0
    assert summary["total_output_tokens"] == 40 * 8 and summary["total_input_tokens"] == 40 * 48
    requests = doc["requests"]
    assert all(len(r["itl_s"]) == 7 and r["output_tokens"] == 8 for r in requests)
    assert 0 < summary["ttft_ms"]["median"] <= summary["ttft_ms"]["p99"] < summary["e2el_ms"]["p99"]
    assert summary["itl_ms"]["mean"] > 0 and summary["tpot_ms"]["mean"] > 0
    assert 0 < summary["goodput"] <= summary["request_throughput"] <= 40 * 3
    assert "TTFT (ms)" in result.stdout and "Goodput" in result.stdout and "Every SLO target holds" in result.stdout
    # Each target at its percentile: TTFT over requests, TBT over every gap of every request.
    slo = summary["slo"]
    assert slo["ttft"]["observed_ms"] == pytest.approx(np.percentile([r["ttft_s"] for r in requests], 90) * 1000)
    assert slo["tbt"]["observed_ms"] == pytest.approx(np.percentile([g for r in requests for g in r["itl_s"]], 99)
                                                      * 1000)
    assert summary["slo_met"] == (slo["ttft"]["met"] and slo["tbt"]["met"])
    # Sent on the drawn schedule: never before a request's arrival, and in arrival order.
    arrivals = [r["arrival_s"] for r in requests]
    assert arrivals == sorted(arrivals) and arrivals[0] > 0
    assert all(r["start_s"] >= r["arrival_s"] for r in requests)

    count = after[f"{M}time_to_first_token_seconds_count"] - before.get(f"{M}time_to_first_token_seconds_count", 0)
    total = after[f"{M}time_to_first_token_seconds_sum"] - before.get(f"{M}time_to_first_token_seconds_sum", 0)
    assert count == 40
    server_ms = total / count * 1000
    client_ms = summary["ttft_ms"]["mean"]
    # The client's TTFT adds the loopback hop and HTTP parsing, never removes time.
    assert server_ms <= client_ms + 1.0
    assert client_ms - server_ms < 25.0, (client_ms, server_ms)


def test_bench_replays_a_trace_with_capped_concurrency(server, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n30,4\n200,6\n9,3\n5000,10\n")
    doc, _ = run_bench(server, tmp_path, "--trace", str(trace), "--max-total-len", "1024", "--num-requests",
                       "12", "--max-concurrency", "3", "--burstiness", "0.5", "--qps", "100", "--no-progress")
    lengths = {(r["prompt_len"], r["output_len"]) for r in doc["requests"]}
    assert lengths == {(30, 4), (200, 6), (9, 3)}  # the 5000-token row is over the cap
    assert all(r["success"] and r["output_tokens"] == r["output_len"] for r in doc["requests"])
    assert doc["config"]["max_concurrency"] == 3


def test_bench_reports_a_bad_slo_flag():
    result = subprocess.run([sys.executable, "-m", "adaptive_sarathi.cli", "bench", "--slo", "latency:5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "ttft" in result.stderr


def _bench_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "adaptive_sarathi.cli", "bench", "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_exit_codes_bad_input_2_unreachable_1(tmp_path):
    missing = _bench_cli("--trace", str(tmp_path / "missing.csv"), "--base-url", f"http://127.0.0.1:{_free_port()}")
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    down = _bench_cli("--num-requests", "2", "--base-url", f"http://127.0.0.1:{_free_port()}")
    assert down.returncode == 1 and "cannot reach" in down.stderr and "Traceback" not in down.stderr


def test_bench_ctrl_c_writes_the_finished_requests_and_exits_130(server, tmp_path):
    import signal
    import time

    def finished() -> float:
        return sum(v for k, v in server.metrics().items() if k.startswith(f"{M}request_success_total"))

    out = tmp_path / "bench.json"
    # More requests than any machine finishes before the signal: the run must be cut short.
    before = finished()
    bench = subprocess.Popen([sys.executable, "-m", "adaptive_sarathi.cli", "bench", "--base-url", server.url,
                              "--prompts", "token-ids", "--num-requests", "1000", "--max-concurrency", "1", "--input-len", "16",
                              "--output-len", "8", "--no-progress", "--json", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and finished() < before + 1:
        time.sleep(0.2)
    time.sleep(0.5)
    bench.send_signal(signal.SIGINT)
    stdout, stderr = bench.communicate(timeout=30)
    assert bench.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True
    assert 1 <= len(doc["requests"]) < 1000 and doc["summary"]["completed"] == len(doc["requests"])
    assert "Successful requests" in stdout


def test_bench_names_its_slo_class_and_records_it_per_request(serve, tmp_path):
    from adaptive_sarathi.controller.slo import load_slo_policy

    with serve(slo=load_slo_policy("llama-3-8b-h100-tiered")) as tiered:
        doc, _ = run_bench(tiered, tmp_path, "--num-requests", "5", "--input-len", "8", "--output-len", "2",
                           "--slo-class", "batch", "--no-progress")
        metrics = tiered.metrics()
    assert doc["config"]["slo_class"] == "batch"
    assert [r["slo_class"] for r in doc["requests"]] == ["batch"] * 5 and doc["summary"]["completed"] == 5
    assert metrics[f"{M}time_to_first_token_seconds_count{{slo_class=batch}}"] == 5
    assert metrics[f"{M}time_to_first_token_seconds_count{{slo_class=interactive}}"] == 0


@pytest.mark.embedded_model
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_bench_sends_text_prompts_of_the_drawn_lengths(serve, tmp_path, endpoint):
    """Text built from the embedded tokenizer: the server counts exactly the prompt tokens bench
    recorded, on either endpoint; --goodput is reported."""
    from adaptive_sarathi.engine.factory import EngineArgs

    with serve(EngineArgs(num_kv_blocks=128)) as smol:
        out = tmp_path / "bench.json"
        result = subprocess.run([sys.executable, "-m", "adaptive_sarathi.cli", "bench", "--base-url", smol.url,
                                 "--endpoint", endpoint, "--num-requests", "6", "--input-len", "50",
                                 "--output-len", "4", "--seed", "2", "--no-progress", "--json", str(out),
                                 "--goodput", "ttft:60000", "e2el:60000"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        metrics = smol.metrics()
    doc = json.loads(out.read_text())
    assert doc["summary"]["completed"] == 6 and doc["summary"]["total_input_tokens"] == 6 * 50
    assert all(r["prompt_len"] == 50 and r["output_tokens"] == 4 and len(r["itl_s"]) == 3 for r in doc["requests"])
    assert metrics[f"{M}prompt_tokens_total"] == 6 * 50
    assert doc["summary"]["request_goodput"] > 0 and "Request goodput" in result.stdout
