"""Every committed dashboard query, run by a real Prometheus (Debian's `prometheus`) that scraped
a live server on the embedded model every second while it served a bounded load, answers non-empty
and sane values: attainment in [0, 1], budgets within the SLO policy's bounds, rates > 0.

Skipped without the prometheus binary, unless REQUIRE_PROMETHEUS=1 (as CI sets): then it fails.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import threading
import time

import pytest
from conftest import RunningServer

from adaptive_sarathi import dashboards
from adaptive_sarathi.controller.adaptive import AdaptiveBudget
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.dashboards.grafana import checks, queries, resolve, variable_queries
from adaptive_sarathi.dashboards.prometheus import local_prometheus
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.loaders.default_model import DEFAULT_NAME
from adaptive_sarathi.metrics import tune_results
from adaptive_sarathi.server.server import Server, ServerArgs

pytestmark = [pytest.mark.slow, pytest.mark.embedded_model]

SLO = load_slo_policy("smollm2-cpu-strict")
STUDY = "tiny-study"
# A results file in the form `adaptive-sarathi tune --json` writes (three trials).
TUNE_RESULTS = {"command": "tune", "config": {}, "policy": "adaptive", "objective": "capacity",
                "best_params": {"margin": 0.1}, "best_value": 2.5, "default_value": 2.0,
                "trials": [{"number": 0, "params": {"margin": 0.05}, "value": 2.0},
                           {"number": 1, "params": {"margin": 0.2}, "value": 1.5},
                           {"number": 2, "params": {"margin": 0.1}, "value": 2.5}]}


def drive_load(port: int) -> dict[int, int]:
    """A bounded load: a calm phase of two streams, then a burst wider than --max-waiting (some
    429s). Returns the count of each status answered."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = {"prompt": f"Request {i}: write a short note about the number {i} and what it means.",
                "max_tokens": 12, "ignore_eos": True, "stream": i % 2 == 0}
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        conn.close()
        with lock:
            statuses[response.status] = statuses.get(response.status, 0) + 1

    def wave(ids) -> None:
        threads = [threading.Thread(target=one, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    for start in range(0, 6, 2):  # calm: two at a time
        wave(range(start, start + 2))
    wave(range(100, 116))  # burst: 16 at once against --max-waiting 4
    return statuses


def sane(check: str, values: list[float]) -> str | None:
    """Why `values` fail `check` (grafana.CHECKS), or None when they pass."""
    if not values:
        return "no series"
    if not all(math.isfinite(v) for v in values):
        return f"non-finite values {values}"
    lo, hi = SLO.bounds.min_token_budget, SLO.bounds.max_token_budget
    failed = {
        "positive": min(values) < 0 or max(values) <= 0,
        "nonnegative": min(values) < 0,
        "fraction": not all(0 <= v <= 1 for v in values),
        "budget": not all(lo <= v <= hi for v in values),
        "info": not all(v == 1 for v in values),
    }[check]
    return f"values {values} fail {check}" if failed else None


def test_every_dashboard_query_answers_sanely_on_a_live_server(prometheus_binary, tmp_path):
    began = time.monotonic()
    engine = create_engine(EngineArgs(num_kv_blocks=256), AdaptiveBudget(SLO))
    server = RunningServer(Server(engine, ServerArgs(port=0, slo=SLO, max_waiting=4), DEFAULT_NAME))
    results = tmp_path / f"{STUDY}.json"
    results.write_text(json.dumps(TUNE_RESULTS))
    tune_port_server, _ = tune_results.serve([results], "127.0.0.1", 0)
    tune_port = tune_port_server.server_address[1]
    try:
        targets = {"server": f"127.0.0.1:{server.port}", "tune": f"127.0.0.1:{tune_port}"}
        with local_prometheus(targets, tmp_path / "prometheus", 1.0, prometheus_binary) as api:
            scraping_since = time.monotonic()
            statuses = drive_load(server.port)
            time.sleep(2.5)  # two more scrapes after the last token
            window = f"{int(time.monotonic() - scraping_since) + 10}s"  # every sample of the run
            assert statuses.get(200, 0) >= 6 and statuses.get(429, 0) >= 1, statuses

            values = {"model_name": DEFAULT_NAME, "study": STUDY}
            failures = []
            for name, spec in dashboards.DASHBOARDS.items():
                board = json.loads((dashboards.DEFAULT_DIR / name).read_text())
                rules = checks(spec.panels)
                for expr in queries(board):
                    answer = [v for _, v in api.query(resolve(expr, values, window, window))]
                    why = sane(rules[expr], answer)
                    if os.environ.get("SHOW_ANSWERS"):
                        print(f"{answer[:6]} <- {expr}")
                    if why:
                        failures.append(f"{name}: {expr}: {why}")
                for metric, label in variable_queries(board):
                    if values[label if label in values else "model_name"] not in api.label_values(label, metric):
                        failures.append(f"{name}: variable label_values({metric}, {label}) lacks its value")
            assert not failures, "\n".join(failures)
            # Beyond the panels' sanity: the counts the load makes certain.
            rejected = api.query('sum(adaptive_sarathi:request_429_total{reason="queue_full"})')
            assert rejected[0][1] == statuses[429]
            decided = api.query("sum(adaptive_sarathi:controller_decisions_total)")
            steps = api.query("sum(adaptive_sarathi:iteration_duration_seconds_count)")
            assert decided[0][1] == steps[0][1] > 0
    finally:
        tune_port_server.shutdown()
        server.stop()
    print(f"prometheus dashboard test: {time.monotonic() - began:.1f} s wall")
