"""The serving overview dashboard: what a vLLM user expects (request and token rates, TTFT, ITL
and end-to-end percentiles and heatmaps, queue, KV cache, preemptions, finish reasons, tokens per
step) and the SLO attainment of the policy in force."""

from __future__ import annotations

from adaptive_sarathi.dashboards.grafana import Panel, Query, dashboard, mean, metric, quantile, rate

UID = "adaptive-sarathi-serving"


def _percentiles(name: str) -> tuple[Query, ...]:
    return tuple(Query(quantile(q, name), f"P{round(q * 100)}") for q in (0.5, 0.9, 0.99)) + (
        Query(mean(name), "mean"),)


def _heatmap(title: str, name: str, unit: str) -> Panel:
    return Panel(title, (Query(f"sum by (le) (increase({metric(name + '_bucket')}[$__rate_interval]))",
                               check="nonnegative"),),
                 kind="heatmap", unit=unit, description="Observations per bucket over each interval")


def _attainment(counter: str, by_class: bool) -> str:
    group = " by (slo_class)" if by_class else ""
    return (f"sum{group} ({rate(counter + '_within_target_total')}) / "
            f"sum{group} ({rate(counter + '_total')})")


PANELS = [
    Panel("Request rate by finish reason", (
        Query(f"sum by (finished_reason) ({rate('request_success_total')})", "{{finished_reason}}", "nonnegative"),
    ), unit="reqps", stack=True),
    Panel("Token throughput", (
        Query(f"sum ({rate('prompt_tokens_total')})", "prompt tokens/s"),
        Query(f"sum ({rate('generation_tokens_total')})", "generation tokens/s"),
    ), unit="short"),
    Panel("Time to first token", _percentiles("time_to_first_token_seconds"), unit="s"),
    Panel("Inter-token latency", _percentiles("inter_token_latency_seconds"), unit="s"),
    Panel("End-to-end request latency", _percentiles("e2e_request_latency_seconds"), unit="s"),
    Panel("Queue time (arrival to first scheduled)", (
        Query(quantile(0.5, "request_queue_time_seconds"), "P50", "nonnegative"),
        Query(quantile(0.99, "request_queue_time_seconds"), "P99", "nonnegative"),
    ), unit="s"),
    _heatmap("TTFT heatmap", "time_to_first_token_seconds", "s"),
    _heatmap("Inter-token latency heatmap", "inter_token_latency_seconds", "s"),
    Panel("Scheduler state", (
        Query(f"sum ({metric('num_requests_running')})", "running", "nonnegative"),
        Query(f"sum ({metric('num_requests_waiting')})", "waiting", "nonnegative"),
    )),
    Panel("KV cache usage", (Query(f"max ({metric('kv_cache_usage_perc')})", "used", "fraction"),),
          unit="percentunit"),
    Panel("Preemptions and relegations", (
        Query(f"sum ({rate('num_preemptions_total')})", "preemptions/s", "nonnegative"),
        Query(f"sum ({rate('num_relegations_total')})", "relegations/s", "nonnegative"),
    ), unit="short"),
    Panel("Finish reasons (dashboard range)", (
        Query(f"sum by (finished_reason) (increase({metric('request_success_total')}[$__range]))",
              "{{finished_reason}}", "nonnegative", instant=True),
    ), kind="bargauge"),
    Panel("Tokens per step", (
        Query(mean("iteration_tokens_total"), "mean tokens"),
        Query(mean("iteration_prefill_tokens"), "mean prefill", "nonnegative"),
        Query(mean("iteration_decode_tokens"), "mean decode", "nonnegative"),
        Query(quantile(0.99, "iteration_tokens_total"), "P99 tokens"),
    )),
    Panel("Step duration", (
        Query(quantile(0.5, "iteration_duration_seconds"), "P50"),
        Query(quantile(0.99, "iteration_duration_seconds"), "P99"),
    ), unit="s"),
    Panel("SLO attainment", (
        Query(_attainment("slo_tbt_gaps", False), "token gaps within TBT", "fraction"),
        Query(_attainment("slo_ttft_requests", False), "requests within TTFT", "fraction"),
    ), unit="percentunit", description="Fraction of token gaps within their class's TBT target and of "
                                       "first tokens within their class's TTFT target, over each interval"),
    Panel("SLO attainment by class", (
        Query(_attainment("slo_tbt_gaps", True), "{{slo_class}} TBT", "fraction"),
        Query(_attainment("slo_ttft_requests", True), "{{slo_class}} TTFT", "fraction"),
    ), unit="percentunit"),
    Panel("Request phases (mean)", (
        Query(mean("request_prefill_time_seconds"), "prefill"),
        Query(mean("request_decode_time_seconds"), "decode", "nonnegative"),
        Query(mean("request_inference_time_seconds"), "inference"),
    ), unit="s"),
    Panel("Request lengths (mean)", (
        Query(mean("request_prompt_tokens"), "prompt tokens"),
        Query(mean("request_generation_tokens"), "generated tokens"),
        Query(mean("request_max_num_generation_tokens"), "max_tokens asked"),
    )),
    Panel("Rejections by reason", (
        Query(f"sum by (reason) ({rate('request_rejected_total')})", "{{reason}}", "nonnegative"),
    ), unit="reqps", stack=True),
    Panel("Server process", (
        Query("sum (rate(process_cpu_seconds_total[$__rate_interval]))", "CPU cores used"),
        Query("max (process_resident_memory_bytes) / 2^30", "resident memory GiB"),
    ), width=12),
    Panel("SLO policy in force", (
        Query(f"max by (name) ({metric('slo_policy_info')})", "{{name}}", "info", instant=True),
    ), kind="table", width=12, height=4),
]


def build() -> dict:
    return dashboard(UID, "adaptive-sarathi: serving overview",
                     "Request and token rates, latencies, queue, KV cache and SLO attainment of one model",
                     PANELS)
