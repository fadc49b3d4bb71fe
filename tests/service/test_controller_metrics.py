"""The controller telemetry and SLO attainment of ServerMetrics, fed known stats objects."""

import dataclasses
import math

from prometheus_client.parser import text_string_to_metric_families

from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.request import FinishReason, RequestTimeline
from adaptive_sarathi.engine.slo_targets import SloTargets
from adaptive_sarathi.engine.stats import StepStats
from adaptive_sarathi.metrics import ServerMetrics, slo_fields

M = "adaptive_sarathi:"
STEP = StepStats(step_index=0, start_time_s=0.0, duration_s=0.1, shape=StepShape(32, 4, 1, 4 * 100),
                 num_seqs=5, num_waiting=3, num_running=5, num_free_blocks=10, num_total_blocks=10,
                 num_preempted=0, token_budget=64, max_chunk=48)
# Top level: TTFT 2 s, TBT 100 ms; class gold: TTFT 1 s, TBT 50 ms; class bulk: TTFT only.
TARGETS = SloTargets(2.0, 0.1, classes={"gold": SloTargets(1.0, 0.05), "bulk": SloTargets(30.0, None)})


def samples(metrics: ServerMetrics) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model_name", "engine") and v)
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_budget_and_chunk_are_histograms_of_every_step():
    metrics = ServerMetrics("m")
    for budget, chunk in ((64, 48), (128, 96), (64, 48), (512, 256)):
        metrics.observe_step(dataclasses.replace(STEP, token_budget=budget, max_chunk=chunk))
    got = samples(metrics)
    assert got[f"{M}iteration_token_budget_tokens_count"] == 4
    assert got[f"{M}iteration_token_budget_tokens_sum"] == 64 + 128 + 64 + 512
    assert got[f"{M}iteration_token_budget_tokens_bucket{{le=64.0}}"] == 2
    assert got[f"{M}iteration_token_budget_tokens_bucket{{le=128.0}}"] == 3
    assert got[f"{M}iteration_max_chunk_tokens_sum"] == 48 + 96 + 48 + 256
    assert got[f"{M}iteration_tokens_total_sum"] == 4 * 36
    assert got[f"{M}iteration_waiting_requests_sum"] == 4 * 3


def test_predicted_and_observed_step_time_are_recorded_on_predicted_steps_only():
    metrics = ServerMetrics("m")
    metrics.observe_step(dataclasses.replace(STEP, predicted_duration_s=0.08, host_gap_s=0.02))
    metrics.observe_step(dataclasses.replace(STEP, predicted_duration_s=0.2))
    metrics.observe_step(STEP)  # no model: nothing to compare
    got = samples(metrics)
    assert got[f"{M}controller_predicted_step_seconds_count"] == 2
    assert math.isclose(got[f"{M}controller_predicted_step_seconds_sum"], 0.28)
    # Observed: the period the model learns, executor time plus the host gap before it.
    assert math.isclose(got[f"{M}controller_observed_step_seconds_sum"], 0.12 + 0.1)
    assert math.isclose(got[f"{M}controller_step_time_ratio_sum"], 0.12 / 0.08 + 0.1 / 0.2)
    assert got[f"{M}controller_step_time_ratio_bucket{{le=0.5}}"] == 1
    assert got[f"{M}controller_step_time_ratio_bucket{{le=1.5}}"] == 2
    assert got[f"{M}iteration_duration_seconds_count"] == 3


def test_decisions_are_counted_by_reason_and_fallbacks_apart():
    metrics = ServerMetrics("m")
    for reason in ("unsure", "unsure", "kv", "no_decodes", "stalled", "kv", "tbt"):
        metrics.observe_step(dataclasses.replace(STEP, budget_reason=reason))
    got = samples(metrics)
    assert {k: v for k, v in got.items() if k.startswith(f"{M}controller_decisions_total")} == {
        f"{M}controller_decisions_total{{reason={r}}}": n
        for r, n in (("unsure", 2), ("kv", 2), ("no_decodes", 1), ("stalled", 1), ("tbt", 1))}
    assert got[f"{M}controller_fallbacks_total"] == 3


def test_decision_reasons_beyond_the_cap_share_one_series():
    metrics = ServerMetrics("m")
    for i in range(40):
        metrics.observe_step(dataclasses.replace(STEP, budget_reason=f"r{i}"))
    got = samples(metrics)
    reasons = [k for k in got if k.startswith(f"{M}controller_decisions_total")]
    assert len(reasons) == 33 and got[f"{M}controller_decisions_total{{reason=other}}"] == 8


def output(slo_class, token_times, arrival=0.0, scheduled=0.05, finished=True):
    timeline = RequestTimeline(arrival, scheduled, token_times[0], list(token_times),
                               token_times[-1] if finished else None)
    tokens = list(range(len(token_times)))
    return RequestOutput("r", [1, 2, 3], tokens, tokens, "", "", finished, FinishReason.LENGTH if finished else None,
                         timeline, slo_class=slo_class)


def test_attainment_counts_gaps_and_first_tokens_against_their_class_targets():
    metrics = ServerMetrics("m", slo_classes=("gold", "bulk"), name="p", targets=TARGETS)
    metrics.observe_output(output("gold", [0.5, 0.54, 0.64, 0.68]))  # TTFT 0.5 <= 1; gaps 40, 100, 40 ms vs 50
    metrics.observe_output(output("gold", [1.5, 1.6]))  # TTFT 1.5 > 1; gap 100 ms > 50
    metrics.observe_output(output(None, [1.5, 1.59, 1.64]))  # top level: TTFT 1.5 <= 2; gaps 90, 50 <= 100
    metrics.observe_output(output("bulk", [40.0, 45.0]))  # TTFT 40 > 30; no TBT target: gaps not counted
    got = samples(metrics)
    assert got[f"{M}slo_tbt_gaps_total{{slo_class=gold}}"] == 4
    assert got[f"{M}slo_tbt_gaps_within_target_total{{slo_class=gold}}"] == 2
    assert got[f"{M}slo_tbt_gaps_total"] == 2 and got[f"{M}slo_tbt_gaps_within_target_total"] == 2
    assert got[f"{M}slo_tbt_gaps_total{{slo_class=bulk}}"] == 0
    assert got[f"{M}slo_ttft_requests_total{{slo_class=gold}}"] == 2
    assert got[f"{M}slo_ttft_requests_within_target_total{{slo_class=gold}}"] == 1
    assert got[f"{M}slo_ttft_requests_within_target_total"] == 1
    assert got[f"{M}slo_ttft_requests_total{{slo_class=bulk}}"] == 1
    assert got[f"{M}slo_ttft_requests_within_target_total{{slo_class=bulk}}"] == 0


def test_attainment_follows_a_new_policy_and_stops_without_one():
    metrics = ServerMetrics("m", slo_classes=("gold",), name="p", targets=TARGETS)
    metrics.set_slo_policy("q", ("gold",), SloTargets(2.0, 0.1, classes={"gold": SloTargets(1.0, 0.2)}))
    metrics.observe_output(output("gold", [0.5, 0.6]))  # 100 ms: within the new 200 ms, not the old 50 ms
    metrics.set_slo_policy(None, ())
    metrics.observe_output(output("gold", [0.5, 0.6]))
    got = samples(metrics)
    assert got[f"{M}slo_tbt_gaps_total{{slo_class=gold}}"] == 1
    assert got[f"{M}slo_tbt_gaps_within_target_total{{slo_class=gold}}"] == 1
    assert got[f"{M}inter_token_latency_seconds_count{{slo_class=gold}}"] == 2


def test_every_target_is_a_bucket_edge_and_ranges_cover_cpu_serving():
    custom = SloTargets(0.123, 0.0421)
    metrics = ServerMetrics("m", targets=custom)
    edges = {name: {float(k.split("le=")[1].rstrip("}")) for k in samples(metrics)
                    if k.startswith(f"{M}{name}_bucket") and "+Inf" not in k}
             for name in ("time_to_first_token_seconds", "inter_token_latency_seconds",
                          "iteration_duration_seconds")}
    for name, found in edges.items():
        # The active policy's, and the shipped policies' (65 / 325 ms TBT, 2 / 8 / 30 s TTFT).
        assert {0.123, 0.0421, 0.065, 0.325, 2.0, 8.0, 30.0} <= found, name
    assert max(edges["inter_token_latency_seconds"]) >= 60 and max(edges["time_to_first_token_seconds"]) >= 600


def test_429s_are_counted_by_reason_beside_every_rejection():
    metrics = ServerMetrics("m")
    metrics.observe_rejection(429)
    metrics.observe_rejection(429, "ttft_unreachable")
    metrics.observe_rejection(429, "ttft_unreachable")
    metrics.observe_rejection(400)
    got = samples(metrics)
    assert got[f"{M}request_429_total{{reason=queue_full}}"] == 1
    assert got[f"{M}request_429_total{{reason=ttft_unreachable}}"] == 2
    assert got[f"{M}request_rejected_total{{reason=bad_request}}"] == 1


class _Policy:
    def __init__(self):
        self.error = None

    def latency_model_error(self):
        return self.error


def test_latency_model_error_is_read_at_scrape_time():
    from adaptive_sarathi.controller.latency_model import LatencyModelError

    policy = _Policy()
    metrics = ServerMetrics("m", budget_policy=policy)
    got = samples(metrics)
    assert got[f"{M}controller_info{{policy=_Policy}}"] == 1
    assert not any("latency_model" in k for k in got)  # no model yet: nothing exported
    policy.error = LatencyModelError(num_predictions=50, mae_s=0.004, mape=0.12, recent_mape=0.08, num_drifts=2)
    got = samples(metrics)
    assert got[f"{M}latency_model_recent_mape"] == 0.08
    assert got[f"{M}latency_model_mape"] == 0.12
    assert got[f"{M}latency_model_mae_seconds"] == 0.004
    assert got[f"{M}latency_model_predictions_total"] == 50
    assert got[f"{M}latency_model_drifts_total"] == 2


def test_the_policy_in_force_exports_its_targets_and_bounds():
    from adaptive_sarathi.controller.slo import load_slo_policy

    metrics = ServerMetrics("m", **slo_fields(load_slo_policy("llama-3-8b-h100-tiered")))
    got = samples(metrics)
    assert got[f"{M}slo_target_seconds{{slo_class=interactive,target=ttft}}"] == 1.0
    assert got[f"{M}slo_target_seconds{{slo_class=batch,target=tbt}}"] == 0.325
    assert got[f"{M}slo_target_seconds{{target=tbt}}"] == 0.065
    assert got[f"{M}slo_budget_bound_tokens{{bound=min}}"] == 128
    assert got[f"{M}slo_budget_bound_tokens{{bound=max}}"] == 8192
    metrics.set_slo_policy(**slo_fields(load_slo_policy("smollm2-cpu-strict")))
    got = samples(metrics)
    assert not any("slo_class=batch" in k for k in got if "slo_target_seconds" in k)
    assert got[f"{M}slo_target_seconds{{target=tbt}}"] == 0.5
    assert got[f"{M}slo_budget_bound_tokens{{bound=max}}"] == 2048
    assert got[f"{M}slo_policy_info{{name=smollm2-cpu-strict}}"] == 1
