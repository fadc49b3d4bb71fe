"""The offline tuning dashboard: the trials of `adaptive-sarathi tune` studies and their best values.

It reads the studies through Prometheus: `python -m adaptive_sarathi.metrics.tune_results FILE...`
serves `tune --json` files as metrics (docs/observability.md says how to scrape it)."""

from __future__ import annotations

from adaptive_sarathi.dashboards.grafana import Panel, Query, dashboard, variable
from adaptive_sarathi.metrics import PREFIX

UID = "adaptive-sarathi-offline-tuning"


def _study(name: str, labels: str = "") -> str:
    return f'{PREFIX}{name}{{study="$study"{"," + labels if labels else ""}}}'


PANELS = [
    Panel("Best value", (Query(f"max ({_study('tune_best_value')})", "best", instant=True),), kind="stat", width=6,
          height=4),
    Panel("Defaults' value", (Query(f"max ({_study('tune_default_value')})", "defaults", instant=True),),
          kind="stat", width=6, height=4),
    Panel("Best / defaults", (
        Query(f"max ({_study('tune_best_value')}) / max ({_study('tune_default_value')})", "improvement",
              instant=True),
    ), kind="stat", width=6, height=4),
    Panel("Trials", (Query(f"max ({_study('tune_trials')})", "trials", instant=True),), kind="stat", width=6,
          height=4),
    Panel("Trial values", (
        Query(f"max by (trial) ({_study('tune_trial_value')})", "trial {{trial}}", instant=True),
    ), kind="bargauge", width=12, height=10, description="Objective value of each trial (higher is better)"),
    Panel("Optimization history (best so far)", (
        Query(f"max by (trial) ({_study('tune_trial_best_value')})", "after trial {{trial}}", instant=True),
    ), kind="bargauge", width=12, height=10),
    Panel("Parameters of each trial", (
        Query(f"max by (trial, param) ({_study('tune_trial_param')})", "{{trial}} {{param}}", "nonnegative",
              instant=True),
    ), kind="table", width=24, height=10),
]


def build() -> dict:
    return dashboard(UID, "adaptive-sarathi: offline tuning",
                     "Trials and best value of a `tune` study (served by adaptive_sarathi.metrics.tune_results)",
                     PANELS, extra_variables=(variable("study", "Study", f"{PREFIX}tune_best_value", "study"),),
                     model_variable=False)
