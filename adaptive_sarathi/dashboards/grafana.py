"""Plain-dict builders of Grafana dashboard JSON (schema 39), and how their queries are read.

A dashboard is a list of Panel specs laid out left to right, top to bottom on Grafana's 24-column
grid. Each query carries a `check`, the sanity rule the Prometheus test applies to its answer
(kept in Python; the JSON holds only what Grafana reads):
  positive     non-empty, every value finite and >= 0, at least one > 0 (rates, durations)
  nonnegative  non-empty, every value finite and >= 0 (counts of rare events, errors)
  fraction     non-empty, every value in [0, 1] (attainment, cache usage)
  budget       non-empty, every value within the SLO policy's token budget bounds
  info         non-empty, every value 1 (info metrics)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from adaptive_sarathi.metrics import PREFIX

CHECKS = ("positive", "nonnegative", "fraction", "budget", "info")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MODEL = '{model_name="$model_name"}'


def metric(name: str, labels: str = "") -> str:
    """`name` (without the prefix) selected for the dashboard's model, plus `labels` matchers."""
    return f'{PREFIX}{name}{{model_name="$model_name"{"," + labels if labels else ""}}}'


def rate(name: str, labels: str = "") -> str:
    return f"rate({metric(name, labels)}[$__rate_interval])"


def quantile(q: float, name: str, by: str = "") -> str:
    """The q-quantile of histogram `name` over the rate interval (grouped also by `by`)."""
    return f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) ({rate(name + '_bucket')}))"


def mean(name: str, by: str = "") -> str:
    """The mean observation of histogram `name` over the rate interval."""
    group = f" by ({by})" if by else ""
    return f"sum{group} ({rate(name + '_sum')}) / sum{group} ({rate(name + '_count')})"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    check: str = "positive"
    instant: bool = False  # a table or stat of the latest value rather than a time series

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"check={self.check!r}: use one of {', '.join(CHECKS)}")


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries, heatmap, stat, table, bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    overrides: tuple[dict, ...] = field(default_factory=tuple)


def _target(query: Query, ref: str, kind: str) -> dict:
    target = {"datasource": DATASOURCE, "expr": query.expr, "legendFormat": query.legend or "__auto",
              "refId": ref, "range": not query.instant, "instant": query.instant}
    if kind == "heatmap":
        target["format"] = "heatmap"
        target["legendFormat"] = "{{le}}"
    if kind == "table":
        target["format"] = "table"
    return target


def _panel(spec: Panel, panel_id: int, x: int, y: int) -> dict:
    panel = {"id": panel_id, "type": spec.kind, "title": spec.title, "description": spec.description,
             "datasource": DATASOURCE, "gridPos": {"h": spec.height, "w": spec.width, "x": x, "y": y},
             "targets": [_target(q, chr(ord("A") + i), spec.kind) for i, q in enumerate(spec.queries)],
             "fieldConfig": {"defaults": {"unit": spec.unit}, "overrides": list(spec.overrides)}, "options": {}}
    if spec.kind == "timeseries":
        panel["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                                      "stacking": {"mode": "normal" if spec.stack else "none"}}
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                            "tooltip": {"mode": "multi"}}
    elif spec.kind == "heatmap":
        panel["options"] = {"calculate": False, "yAxis": {"unit": spec.unit}, "color": {"scheme": "Oranges"},
                            "cellGap": 1}
    elif spec.kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return panel


def dashboard(uid: str, title: str, description: str, panels: list[Panel], extra_variables: tuple[dict, ...] = (),
              model_variable: bool = True) -> dict:
    """The dashboard JSON: `panels` laid out in rows, a datasource variable, and (model_variable)
    a model_name variable listing the served models."""
    laid, x, y, row_h = [], 0, 0, 0
    for i, spec in enumerate(panels):
        if x + spec.width > 24:
            x, y, row_h = 0, y + row_h, 0
        laid.append(_panel(spec, i + 1, x, y))
        x, row_h = x + spec.width, max(row_h, spec.height)
    variables = [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0}]
    if model_variable:
        variables.append(variable("model_name", "Model", f"{PREFIX}num_requests_running", "model_name"))
    variables.extend(extra_variables)
    return {"uid": uid, "title": title, "description": description, "tags": ["adaptive-sarathi"],
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "5s", "time": {"from": "now-15m",
                                                                                            "to": "now"},
            "timepicker": {}, "timezone": "browser", "graphTooltip": 1, "annotations": {"list": []},
            "templating": {"list": variables}, "panels": laid}


def variable(name: str, label: str, metric_name: str, label_name: str) -> dict:
    """A query variable listing the values of `label_name` on `metric_name`."""
    query = f"label_values({metric_name}, {label_name})"
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "definition": query, "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2, "sort": 1, "current": {}, "hide": 0, "includeAll": False, "multi": False}


# -- reading queries back ------------------------------------------------------------------------

_FUNCTIONS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (function names, label matchers, grouping
    labels, durations, strings and numbers left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token, rest = match.group(0), text[match.end():]
        if token in _FUNCTIONS_AND_KEYWORDS or rest.lstrip().startswith("("):
            continue
        if re.fullmatch(r"[eE]\d*|Inf|NaN|inf|nan", token) or text[max(0, match.start() - 1)] in "0123456789.":
            continue
        names.add(token)
    return names


def resolve(expr: str, values: dict[str, str], rate_interval: str = "1m", range_: str = "5m") -> str:
    """`expr` with Grafana's variables replaced: $__rate_interval and $__interval by `rate_interval`,
    $__range by `range_`, and $name by values[name]. Raises ValueError naming a variable left."""
    out = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    out = out.replace("$__range", range_)
    for name in sorted(values, key=len, reverse=True):
        out = out.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    left = re.search(r"\$\{?\w+", out)
    if left:
        raise ValueError(f"query {expr!r} uses the variable {left.group(0)} with no value: pass it in values")
    return out


def queries(dashboard_json: dict) -> list[str]:
    """Every query expression of a dashboard's panels, in order."""
    return [t["expr"] for p in dashboard_json["panels"] for t in p.get("targets", ())]


def variable_queries(dashboard_json: dict) -> list[tuple[str, str]]:
    """(metric, label) of every label_values(metric, label) variable of a dashboard. Raises
    ValueError for a query variable of another form."""
    out = []
    for v in dashboard_json["templating"]["list"]:
        if v.get("type") == "query":
            match = re.fullmatch(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*(\w+)\s*\)", v["definition"])
            if match is None:
                raise ValueError(f"variable {v['name']}: {v['definition']!r} is not label_values(metric, label)")
            out.append((match.group(1), match.group(2)))
    return out


def checks(panels: list[Panel]) -> dict[str, str]:
    """expr -> check of every query of `panels` (one check per distinct expression)."""
    out: dict[str, str] = {}
    for p in panels:
        for q in p.queries:
            if out.setdefault(q.expr, q.check) != q.check:
                raise ValueError(f"query {q.expr!r} has two checks ({out[q.expr]}, {q.check}): give it one")
    return out
