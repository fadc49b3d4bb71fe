"""/metrics after known traffic: parsed by prometheus-client, its counts match what was served."""

import dataclasses

import pytest

from adaptive_sarathi.engine.factory import EngineArgs

ENGINE = EngineArgs(model="dummy:tiny", num_kv_blocks=512, token_budget=96, max_chunk=32)
# (prompt tokens, output tokens, streamed)
TRAFFIC = [(5, 4, False), (40, 7, True), (100, 1, False), (17, 12, True), (64, 3, True), (3, 9, False)]
M = "adaptive_sarathi:"


@pytest.fixture(scope="module")
def served(serve):
    with serve(ENGINE) as server:
        for i, (prompt_len, output_len, stream) in enumerate(TRAFFIC):
            body = {"prompt": [10 + i] * prompt_len, "max_tokens": output_len, "ignore_eos": True,
                    "stream": stream}
            status, _, _ = server.request("POST", "/v1/completions", body)
            assert status == 200
        assert server.request("POST", "/v1/completions", {"prompt": [1], "max_tokens": 0})[0] == 400
        yield server.metrics()


def test_request_histograms_count_every_request(served):
    n = len(TRAFFIC)
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds",
                 "request_prompt_tokens", "request_generation_tokens"):
        assert served[f"{M}{name}_count"] == n, name
        assert served[f"{M}{name}_bucket{{le=+Inf}}"] == n, name
    assert served[f"{M}request_success_total{{finished_reason=length}}"] == n
    assert served[f"{M}request_success_total{{finished_reason=abort}}"] == 0
    assert served[f"{M}request_max_num_generation_tokens_count"] == n
    assert served[f"{M}request_max_num_generation_tokens_sum"] == sum(o for _, o, _ in TRAFFIC)
    for name in ("prefill", "decode", "inference"):
        assert served[f"{M}request_{name}_time_seconds_count"] == n, name
    assert served[f"{M}request_inference_time_seconds_sum"] == pytest.approx(
        served[f"{M}request_prefill_time_seconds_sum"] + served[f"{M}request_decode_time_seconds_sum"])
    assert served["process_resident_memory_bytes"] > 0
    assert 0 < served[f"{M}time_to_first_token_seconds_sum"] <= served[f"{M}e2e_request_latency_seconds_sum"]


def test_token_counts_match_what_was_served(served):
    prompt_tokens = sum(p for p, _, _ in TRAFFIC)
    output_tokens = sum(o for _, o, _ in TRAFFIC)
    assert served[f"{M}prompt_tokens_total"] == prompt_tokens
    assert served[f"{M}generation_tokens_total"] == output_tokens
    assert served[f"{M}request_prompt_tokens_sum"] == prompt_tokens
    assert served[f"{M}request_generation_tokens_sum"] == output_tokens
    # Every output token but each request's last is fed back as a decode token.
    assert served[f"{M}inter_token_latency_seconds_count"] == output_tokens - len(TRAFFIC)
    assert served[f"{M}iteration_decode_tokens_sum"] == output_tokens - len(TRAFFIC)
    assert served[f"{M}iteration_prefill_tokens_sum"] == prompt_tokens


def test_iteration_metrics_show_the_budget_in_force(served):
    steps = served[f"{M}iteration_duration_seconds_count"]
    assert steps >= max(o for _, o, _ in TRAFFIC)
    assert served[f"{M}iteration_prefill_tokens_count"] == served[f"{M}iteration_decode_tokens_count"] == steps
    # One observation per step, so a scrape's mean is the mean over steps, not the latest value.
    assert served[f"{M}iteration_token_budget_tokens_count"] == served[f"{M}iteration_max_chunk_tokens_count"] == steps
    assert served[f"{M}iteration_token_budget_tokens_sum"] == ENGINE.token_budget * steps
    assert served[f"{M}iteration_max_chunk_tokens_sum"] == ENGINE.max_chunk * steps
    assert served[f"{M}iteration_tokens_total_sum"] == (served[f"{M}iteration_prefill_tokens_sum"]
                                                        + served[f"{M}iteration_decode_tokens_sum"])
    # The fixed policy gives no reason and predicts nothing.
    assert served[f"{M}controller_decisions_total{{reason=none}}"] == steps
    assert served[f"{M}controller_predicted_step_seconds_count"] == 0
    # The 100-token prompt needs ceil(100 / 32) chunks: no step took more prompt tokens than that.
    assert served[f"{M}iteration_prefill_tokens_bucket{{le=32.0}}"] == steps


def test_queue_gauges_are_idle_after_traffic(served):
    assert served[f"{M}num_requests_running"] == 0
    assert served[f"{M}num_requests_waiting"] == 0
    assert served[f"{M}kv_cache_usage_perc"] == 0
    assert served[f"{M}num_preemptions_total"] == 0


def test_two_servers_in_one_process_keep_separate_registries(serve, served):
    with serve(dataclasses.replace(ENGINE, token_budget=64)) as other:
        metrics = other.metrics()
    assert metrics[f"{M}time_to_first_token_seconds_count"] == 0
    assert served[f"{M}time_to_first_token_seconds_count"] == len(TRAFFIC)


def test_relegated_requests_are_counted():
    from prometheus_client import generate_latest

    from adaptive_sarathi.engine.latency.shape import StepShape
    from adaptive_sarathi.engine.stats import StepStats
    from adaptive_sarathi.metrics import ServerMetrics

    metrics = ServerMetrics("m")
    step = StepStats(step_index=0, start_time_s=0.0, duration_s=0.01, shape=StepShape(0, 1, 0, 1), num_seqs=1,
                     num_waiting=3, num_running=1, num_free_blocks=10, num_total_blocks=10, num_preempted=0,
                     token_budget=64, max_chunk=64, num_relegated=2)
    metrics.observe_step(step)
    metrics.observe_step(dataclasses.replace(step, num_relegated=0))
    assert 'adaptive_sarathi:num_relegations_total{engine="0",model_name="m"} 2.0' in generate_latest(metrics.registry).decode()
