"""The controller tuning dashboard: what the budget controller decided and why, against the SLO.

Budget and chunk over time (per-step means and percentiles from their histograms, so a 1 s scrape
sees every step) beside the policy's bounds and the TBT tail against its target; the budget
distribution; predicted against observed step time and the latency model's error; decisions by
reason and fallbacks; queue pressure; per-class attainment; 429s and relegations."""

from __future__ import annotations

from adaptive_sarathi.dashboards.grafana import Panel, Query, dashboard, mean, metric, quantile, rate

UID = "adaptive-sarathi-controller"
_TBT, _TTFT = 'target="tbt"', 'target="ttft"'


def _attainment(counter: str) -> str:
    return (f"sum by (slo_class) ({rate(counter + '_within_target_total')}) / "
            f"sum by (slo_class) ({rate(counter + '_total')})")


PANELS = [
    Panel("Token budget per step", (
        # Means, not quantiles: histogram_quantile interpolates inside a bucket, so it can read
        # below the smallest budget that ran; the distribution is the heatmap's.
        Query(mean("iteration_token_budget_tokens"), "mean budget", "budget"),
        Query(f"max by (bound) ({metric('slo_budget_bound_tokens')})", "{{bound}} bound", "budget"),
    ), width=12, description="Budget each step ran under (means over the interval, every step counted), "
                             "within the SLO policy's bounds"),
    Panel("Chunk size and tokens per step", (
        Query(mean("iteration_max_chunk_tokens"), "mean chunk limit", "budget"),
        Query(mean("iteration_tokens_total"), "mean tokens used"),
    ), width=12),
    Panel("Token gaps against the TBT target", (
        Query(quantile(0.99, "inter_token_latency_seconds", "slo_class"), "{{slo_class}} P99 gap"),
        Query(f"max by (slo_class) ({metric('slo_target_seconds', _TBT)})", "{{slo_class}} target"),
    ), unit="s", width=12),
    Panel("First tokens against the TTFT target", (
        Query(quantile(0.9, "time_to_first_token_seconds", "slo_class"), "{{slo_class}} P90 TTFT"),
        Query(f"max by (slo_class) ({metric('slo_target_seconds', _TTFT)})", "{{slo_class}} target"),
    ), unit="s", width=12),
    Panel("Budget distribution", (
        Query(f"sum by (le) (increase({metric('iteration_token_budget_tokens_bucket')}[$__rate_interval]))",
              check="nonnegative"),
    ), kind="heatmap", width=12, description="Steps per budget bucket over each interval"),
    Panel("Predicted and observed step time", (
        Query(mean("controller_predicted_step_seconds"), "predicted (mean)", "nonnegative"),
        Query(mean("controller_observed_step_seconds"), "observed (mean)"),
        Query(quantile(0.5, "controller_step_time_ratio"), "observed / predicted P50"),
        Query(quantile(0.99, "controller_step_time_ratio"), "observed / predicted P99"),
    ), width=12, description="Over the steps the policy predicted; observed is the step's period (executor "
                             "time and the host gap before it), what the model learns"),
    Panel("Latency model error", (
        Query(f"max ({metric('latency_model_recent_mape')})", "recent MAPE", "nonnegative"),
        Query(f"max ({metric('latency_model_mape')})", "MAPE so far", "nonnegative"),
        Query(f"sum (increase({metric('latency_model_drifts_total')}[$__rate_interval]))", "drift resets",
              "nonnegative"),
    ), unit="percentunit", width=12),
    Panel("Decisions by reason", (
        Query(f"sum by (reason) ({rate('controller_decisions_total')})", "{{reason}}"),
        Query(f"sum ({rate('controller_fallbacks_total')})", "fallbacks", "nonnegative"),
    ), unit="ops", stack=False, width=12, description="Steps per second by the reason the policy gave for "
                                                      "their budget; fallbacks ran the SLO's fallback budget"),
    Panel("Queue pressure", (
        Query(f"sum ({metric('num_requests_waiting')})", "waiting now", "nonnegative"),
        Query(mean("iteration_waiting_requests"), "waiting after each step (mean)", "nonnegative"),
        Query(quantile(0.9, "request_queue_time_seconds"), "queue time P90 (s)", "nonnegative"),
    ), width=12),
    Panel("Attainment by class", (
        Query(_attainment("slo_tbt_gaps"), "{{slo_class}} gaps within TBT", "fraction"),
        Query(_attainment("slo_ttft_requests"), "{{slo_class}} requests within TTFT", "fraction"),
    ), unit="percentunit", width=12),
    Panel("429s and relegations", (
        Query(f"sum by (reason) ({rate('request_429_total')})", "429 {{reason}}", "nonnegative"),
        Query(f"sum ({rate('num_relegations_total')})", "relegated", "nonnegative"),
    ), unit="reqps", width=12),
    Panel("Policy in force", (
        Query(f"max by (policy) ({metric('controller_info')})", "{{policy}}", "info", instant=True),
        Query(f"max by (name) ({metric('slo_policy_info')})", "{{name}}", "info", instant=True),
    ), kind="table", width=12, height=8),
]


def build() -> dict:
    return dashboard(UID, "adaptive-sarathi: controller tuning",
                     "What the budget controller decided, why, and how well its latency model predicted",
                     PANELS)
