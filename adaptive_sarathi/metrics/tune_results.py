"""The results of offline tuning runs (`adaptive-sarathi tune --json FILE`) as Prometheus metrics,
so the offline tuning dashboard reads a study from the same Prometheus as the serving ones.

    python -m adaptive_sarathi.metrics.tune_results results.json [more.json ...] --port 9109

serves, for every file (its stem is the study label), on each scrape (a re-run's file shows at
once): tune_trial_value{trial} (the objective of each trial, higher is better),
tune_trial_best_value{trial} (the best value up to and including that trial: the optimization
history), tune_trial_param{trial,param} (each numeric parameter of each trial),
tune_best_value, tune_default_value (trial 0: the policy's defaults) and tune_trials. Every series
has the labels study, policy and objective. A file that cannot be read or parsed is skipped on
that scrape and counted in tune_results_read_errors_total{study}.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adaptive_sarathi.metrics.server_metrics import PREFIX

logger = logging.getLogger(__name__)
_LABELS = ("study", "policy", "objective")


class TuneResultsError(ValueError):
    """A results file that is not what `tune --json` writes; the message names the file and field."""


def read_results(path: Path) -> dict:
    """The `tune --json` document at `path`, checked for the fields exported. Raises
    TuneResultsError naming the file and the field, OSError when it cannot be read."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TuneResultsError(f"{path}: not JSON ({err}); pass a file written by `adaptive-sarathi tune --json`")
    if not isinstance(doc, dict) or doc.get("command") != "tune":
        raise TuneResultsError(f"{path}: field command is not \"tune\"; pass a file written by "
                               "`adaptive-sarathi tune --json`")
    for field in ("policy", "objective", "best_value", "default_value", "trials"):
        if field not in doc:
            raise TuneResultsError(f"{path}: field {field} is missing; pass a file written by `adaptive-sarathi tune "
                                   "--json`")
    for i, trial in enumerate(doc["trials"]):
        if not (isinstance(trial, dict) and isinstance(trial.get("number"), int)
                and isinstance(trial.get("value"), (int, float)) and isinstance(trial.get("params", {}), dict)):
            raise TuneResultsError(f"{path}: trials[{i}] needs an integer number, a numeric value and a params "
                                   "object")
    return doc


class TuneResultsCollector(Collector):
    """Exports the `tune --json` files `paths` on every scrape (see the module docstring)."""

    def __init__(self, paths: Sequence[Path]):
        self._paths = tuple(Path(p) for p in paths)
        self._errors = {p.stem: 0 for p in self._paths}

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        value, best_so_far, param, best, default, trials, errors = families
        for path in self._paths:
            try:
                doc = read_results(path)
            except (OSError, TuneResultsError) as err:
                logger.warning("skipping %s on this scrape: %s", path, err)
                self._errors[path.stem] += 1
                continue
            labels = [path.stem, str(doc["policy"]), str(doc["objective"])]
            running = float("-inf")
            for trial in sorted(doc["trials"], key=lambda t: t["number"]):
                number = str(trial["number"])
                running = max(running, float(trial["value"]))
                value.add_metric([*labels, number], float(trial["value"]))
                best_so_far.add_metric([*labels, number], running)
                for name, v in trial.get("params", {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        param.add_metric([*labels, number, name], float(v))
            best.add_metric(labels, float(doc["best_value"]))
            default.add_metric(labels, float(doc["default_value"]))
            trials.add_metric(labels, len(doc["trials"]))
        for study, count in self._errors.items():
            errors.add_metric([study], count)
        return iter(families)

    @staticmethod
    def _families() -> list[Metric]:
        p = PREFIX
        return [
            GaugeMetricFamily(f"{p}tune_trial_value", "Objective value of each trial (higher is better)",
                              labels=(*_LABELS, "trial")),
            GaugeMetricFamily(f"{p}tune_trial_best_value", "Best objective value up to and including each trial",
                              labels=(*_LABELS, "trial")),
            GaugeMetricFamily(f"{p}tune_trial_param", "Each numeric parameter of each trial",
                              labels=(*_LABELS, "trial", "param")),
            GaugeMetricFamily(f"{p}tune_best_value", "Best objective value of the study", labels=_LABELS),
            GaugeMetricFamily(f"{p}tune_default_value", "Objective value with the policy's defaults (trial 0)",
                              labels=_LABELS),
            GaugeMetricFamily(f"{p}tune_trials", "Trials in the study", labels=_LABELS),
            CounterMetricFamily(f"{p}tune_results_read_errors", "Scrapes that could not read a study's file",
                                labels=("study",)),
        ]


def tune_results_registry(paths: Sequence[Path]) -> CollectorRegistry:
    """A registry exporting `paths`. Raises TuneResultsError or OSError for a file that cannot be
    read now, so a typo fails at start rather than on every scrape."""
    for path in paths:
        read_results(Path(path))
    registry = CollectorRegistry(auto_describe=True)
    registry.register(TuneResultsCollector(paths))
    return registry


def serve(paths: Sequence[Path], host: str, port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve `paths` on http://host:port/metrics (port 0: any free one) from a background thread;
    returns (server, thread): server.server_address is where it listens, server.shutdown() stops
    it. Always the classic text format, as the engine's server answers: prometheus-client's own
    server negotiates OpenMetrics, whose name escaping would rename the `adaptive_sarathi:` prefix."""
    registry = tune_results_registry(paths)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # one line per scrape would flood the log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="tune-results", daemon=True)
    thread.start()
    return server, thread


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptive_sarathi.metrics.tune_results",
                                     description="Serve `adaptive-sarathi tune --json` results as Prometheus metrics "
                                                 "(docs/observability.md).")
    parser.add_argument("files", nargs="+", type=Path, help="results files written by `tune --json`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9109, help="port to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        serve(args.files, args.host, args.port)
    except (OSError, TuneResultsError) as err:
        parser.error(str(err))
    print(f"serving {len(args.files)} tuning result file(s) on http://{args.host}:{args.port}/metrics", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
