"""The server's Prometheus metrics: the only package that talks to prometheus-client.

server_metrics.ServerMetrics is fed the engine's plain stats objects; buckets holds the histogram
edges; model_error exports the budget policy's latency model error at scrape time; tune_results
serves offline tuning results (`tune --json` files) for the offline tuning dashboard.
docs/observability.md lists every metric and its meaning.
"""

from __future__ import annotations

from adaptive_sarathi.metrics.server_metrics import PREFIX, ServerMetrics, slo_fields

__all__ = ["PREFIX", "ServerMetrics", "exposed_sample_names", "slo_fields"]

# The sample names each metric type exposes, after its family name (prometheus-client's text format).
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "unknown": ("",)}


class _ModelProbe:
    """A budget policy stand-in whose latency model has an error to export (so its metrics show)."""

    class _Error:
        num_predictions = mae_s = mape = recent_mape = num_drifts = 0

    def latency_model_error(self):
        return self._Error()


def exposed_sample_names() -> frozenset[str]:
    """Every sample name a server's /metrics can carry (histogram _bucket/_sum/_count, counter
    _total, ...), the latency model's and the process's included: what a dashboard query may name."""
    from adaptive_sarathi.engine.slo_targets import SloTargets

    metrics = ServerMetrics("probe", slo_classes=("c",), name="p", targets=SloTargets(1.0, 0.1),
                            budget_bounds=(16, 2048), budget_policy=_ModelProbe())
    from adaptive_sarathi.metrics.tune_results import TuneResultsCollector

    names = set()
    families = [*metrics.registry.collect(), *TuneResultsCollector(())._families()]
    for family in families:
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return frozenset(names)
