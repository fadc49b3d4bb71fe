"""Grafana dashboards as code: plain dicts built in Python, committed as JSON under dashboards/.

    python -m adaptive_sarathi.dashboards          # write dashboards/*.json
    python -m adaptive_sarathi.dashboards --check  # fail on stale JSON or an unknown metric

DASHBOARDS maps each file name to its builder and its panels (whose queries carry the sanity
rule the Prometheus test applies, grafana.CHECKS). docs/observability.md shows them in Grafana.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from adaptive_sarathi.dashboards import controller, offline, serving
from adaptive_sarathi.dashboards.grafana import Panel, checks, metric_names, queries, variable_queries


class DashboardSpec(NamedTuple):
    build: Callable[[], dict]
    panels: list[Panel]


DASHBOARDS = {
    "serving-overview.json": DashboardSpec(serving.build, serving.PANELS),
    "controller-tuning.json": DashboardSpec(controller.build, controller.PANELS),
    "offline-tuning.json": DashboardSpec(offline.build, offline.PANELS),
}

# The committed JSON, at the top of a source checkout.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "dashboards"


def render(board: dict) -> str:
    """The JSON text a dashboard is committed as (stable key order, one trailing newline)."""
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every dashboard's JSON into `directory` (created if missing); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, spec in DASHBOARDS.items():
        path = directory / name
        path.write_text(render(spec.build()))
        paths.append(path)
    return paths


def problems(directory: Path = DEFAULT_DIR) -> list[str]:
    """What is wrong with the committed dashboards in `directory`, one line each (empty: none):
    a file missing or not what its builder makes now, a JSON file no builder makes, a query
    naming a metric the server does not expose, a query without a sanity check."""
    from adaptive_sarathi.metrics import exposed_sample_names

    known = exposed_sample_names()
    found = []
    for name, spec in DASHBOARDS.items():
        path = directory / name
        board = spec.build()
        if not path.is_file():
            found.append(f"{path}: missing; run `python -m adaptive_sarathi.dashboards` and commit it")
        elif path.read_text() != render(board):
            found.append(f"{path}: stale (not what the generator writes now); run `python -m "
                         "adaptive_sarathi.dashboards` and commit it")
        rules = checks(spec.panels)
        for expr in queries(board):
            for unknown in sorted(metric_names(expr) - known):
                found.append(f"{name}: the query {expr!r} names {unknown}, which the server does not expose")
            if expr not in rules:
                found.append(f"{name}: the query {expr!r} has no sanity check")
        for metric, _ in variable_queries(board):
            if metric not in known:
                found.append(f"{name}: a variable lists {metric}, which the server does not expose")
    for extra in sorted(set(p.name for p in directory.glob("*.json")) - set(DASHBOARDS)):
        found.append(f"{directory / extra}: no generator makes it; delete it or add its builder to DASHBOARDS")
    return found
