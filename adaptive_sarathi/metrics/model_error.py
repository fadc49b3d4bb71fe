"""The latency model's online error as metrics, read from the budget policy at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class LatencyModelCollector(Collector):
    """Collects, on every scrape, `read()` (BudgetPolicy.latency_model_error: an object with
    num_predictions, mae_s, mape, recent_mape, num_drifts, or None) as
    latency_model_recent_mape, latency_model_mape, latency_model_mae_seconds (gauges) and
    latency_model_predictions_total, latency_model_drifts_total (counters). Nothing is exported
    while read() answers None (a policy without a model). Reading at scrape time costs the engine
    thread nothing per step; the values are read without a lock, so one scrape may mix two
    neighbouring steps' numbers, never a torn float."""

    def __init__(self, prefix: str, labels: dict[str, str], read: Callable[[], object | None]):
        self._prefix = prefix
        self._names = tuple(labels)
        self._values = tuple(labels.values())
        self._read = read

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(None))

    def collect(self) -> Iterator[Metric]:
        error = self._read()
        return iter(self._families(error) if error is not None else ())

    def _families(self, error) -> list[Metric]:
        p, names = self._prefix, self._names
        families = [
            (GaugeMetricFamily(f"{p}latency_model_recent_mape", "Mean absolute percentage error (fraction) of the "
                               "budget policy's latency model over its recent predictions", labels=names),
             "recent_mape"),
            (GaugeMetricFamily(f"{p}latency_model_mape", "Mean absolute percentage error (fraction) of the latency "
                               "model over every prediction so far", labels=names), "mape"),
            (GaugeMetricFamily(f"{p}latency_model_mae_seconds", "Mean absolute error of the latency model's step "
                               "time predictions", labels=names), "mae_s"),
            (CounterMetricFamily(f"{p}latency_model_predictions", "Steps the latency model predicted before "
                                 "learning from them", labels=names), "num_predictions"),
            (CounterMetricFamily(f"{p}latency_model_drifts", "Regime changes the latency model detected (each "
                                 "one rebuilt its fit)", labels=names), "num_drifts"),
        ]
        if error is not None:
            for family, field in families:
                family.add_metric(self._values, float(getattr(error, field)))
        return [family for family, _ in families]
