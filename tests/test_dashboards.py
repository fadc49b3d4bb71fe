"""The dashboards as code: the committed JSON is what the generator writes, and every query names
metrics the server exposes (the check CI runs); the check itself catches both faults."""

from __future__ import annotations

import json
import shutil

import pytest

from adaptive_sarathi import dashboards
from adaptive_sarathi.dashboards.__main__ import main
from adaptive_sarathi.dashboards.grafana import Panel, Query, dashboard, metric_names, resolve


def test_the_committed_dashboards_pass_the_check(capsys):
    assert main(["--check"]) == 0, capsys.readouterr().err
    assert dashboards.problems() == []


def test_the_check_fails_on_stale_or_missing_json(tmp_path):
    shutil.copytree(dashboards.DEFAULT_DIR, tmp_path, dirs_exist_ok=True)
    board = json.loads((tmp_path / "controller-tuning.json").read_text())
    board["panels"][0]["title"] = "edited by hand"
    (tmp_path / "controller-tuning.json").write_text(json.dumps(board))
    (tmp_path / "offline-tuning.json").unlink()
    (tmp_path / "leftover.json").write_text("{}")
    found = dashboards.problems(tmp_path)
    assert any("controller-tuning.json: stale" in line for line in found)
    assert any("offline-tuning.json: missing" in line for line in found)
    assert any("leftover.json: no generator makes it" in line for line in found)
    assert main(["--check", "--dir", str(tmp_path)]) == 1


def test_the_check_fails_on_a_metric_the_server_does_not_expose(tmp_path, monkeypatch):
    panels = [Panel("typo", (Query('rate(adaptive_sarathi:generation_token_total{model_name="$model_name"}[1m])'),))]
    spec = dashboards.DashboardSpec(lambda: dashboard("u", "t", "d", panels), panels)
    monkeypatch.setattr(dashboards, "DASHBOARDS", {"typo.json": spec})
    dashboards.write(tmp_path)
    found = dashboards.problems(tmp_path)
    assert len(found) == 1 and "names adaptive_sarathi:generation_token_total, which the server does not expose" \
        in found[0]


def test_metric_names_leaves_out_functions_labels_and_durations():
    expr = ('histogram_quantile(0.99, sum by (le, slo_class) (rate(adaptive_sarathi:x_bucket{model_name="a:b",'
            'le!="1e3"}[5m]))) / on (slo_class) group_left max(process_open_fds) * 2e-3 + sum without (engine) (y)')
    assert metric_names(expr) == {"adaptive_sarathi:x_bucket", "process_open_fds", "y"}


def test_resolve_fills_every_variable_or_names_the_one_left():
    expr = 'rate(m{model_name="$model_name"}[$__rate_interval]) + increase(m[$__range])'
    assert resolve(expr, {"model_name": "smol"}, "30s", "2m") == 'rate(m{model_name="smol"}[30s]) + increase(m[2m])'
    with pytest.raises(ValueError, match=r"\$study"):
        resolve('m{study="$study"}', {})


def test_every_query_has_a_known_sanity_check():
    for spec in dashboards.DASHBOARDS.values():
        for panel in spec.panels:
            assert panel.queries, panel.title
    with pytest.raises(ValueError, match="check="):
        Query("m", check="looks fine")
