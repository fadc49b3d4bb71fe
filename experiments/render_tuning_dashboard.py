"""Render the controller tuning dashboard's panels from Prometheus query results, to PNG, so a run
can be seen without Grafana.

Two ways in:
- `--prometheus URL --last 15m` (or `--start`/`--end`, Unix seconds): draw what an existing
  Prometheus holds for the served model (`--model-name`).
- `--run WORKLOAD` (default when no --prometheus): a self-contained phased run. It starts
  `adaptive-sarathi serve --policy adaptive --slo-policy smollm2-cpu-strict` on the embedded model,
  a local Prometheus (Debian's `prometheus` binary) scraping it every second, sends the workload
  with `adaptive-sarathi bench --workload`, then draws the run. The default workload,
  examples/workloads/cpu_low_high.yaml, has a low, a high and a low phase, so the budget moves
  with the load.

The committed picture, experiments/results/tuning_dashboard_phased.png, is the second of two runs
on a 2-CPU host: the first (`--step-log steps.jsonl`, no prior) logged the steps that
`adaptive-sarathi profile --from-stats steps.jsonl --out
experiments/profiles/cpu_smollm2-135m_served_periods.csv` fitted a CPU profile from; the second
ran with `--profile experiments/profiles/cpu_smollm2-135m_served_periods.csv` as the policy's prior.
Without a prior the online model's error on that host stays near its 25% confidence bound, and
the policy serves most steps at the fallback budget.

Every query is the committed dashboard's (dashboards/controller-tuning.json), with Grafana's
variables filled in ($__rate_interval: --rate-interval). Time series panels are drawn as lines,
heatmaps as per-bucket counts over time, tables as their latest rows. The full mode writes
experiments/results/tuning_dashboard_phased.png (needs matplotlib: the `experiments` extra);
--smoke serves a tiny two-phase workload on the random tiny model, checks every panel has data and
draws nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from adaptive_sarathi.dashboards import DEFAULT_DIR
from adaptive_sarathi.dashboards.grafana import resolve
from adaptive_sarathi.dashboards.prometheus import PrometheusAPI, free_port, local_prometheus
from adaptive_sarathi.engine.loaders.default_model import DEFAULT_NAME

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = DEFAULT_DIR / "controller-tuning.json"
RESULTS = Path(__file__).parent / "results" / "tuning_dashboard_phased.png"
WORKLOAD = ROOT / "examples" / "workloads" / "cpu_low_high.yaml"
SLO_POLICY = "smollm2-cpu-strict"
SMOKE_WORKLOAD = """phases:
  - synthetic: {prompt: {dist: fixed, value: 8}, output: {dist: fixed, value: 4}}
    qps: 4.0
    num_requests: 8
  - synthetic: {prompt: {dist: fixed, value: 96}, output: {dist: fixed, value: 4}}
    qps: 16.0
    num_requests: 16
"""


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: {{label}} replaced by the series' label value."""
    if template in ("", "__auto"):
        return ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def fetch(api: PrometheusAPI, board: dict, values: dict[str, str], start: float, end: float, step_s: float,
          rate_interval: str) -> list[dict]:
    """Every panel of `board` with its query answers: a "series" list of (name, [(t, v)]) for
    range panels, "rows" of (name, value) for instant ones (at `end`)."""
    whole = f"{max(1, int(math.ceil(end - start)))}s"
    panels = []
    for panel in board["panels"]:
        drawn = {"title": panel["title"], "type": panel["type"], "unit": panel["fieldConfig"]["defaults"]["unit"],
                 "series": [], "rows": []}
        for target in panel["targets"]:
            expr = resolve(target["expr"], values, rate_interval, whole)
            if target.get("instant"):
                for labels, value in api.query(expr, at=end):
                    drawn["rows"].append((legend(target["legendFormat"], labels), value))
            else:
                for labels, points in api.query_range(expr, start, end, step_s):
                    name = labels.get("le", "") if panel["type"] == "heatmap" else legend(target["legendFormat"],
                                                                                          labels)
                    drawn["series"].append((name, [(t, v) for t, v in points if math.isfinite(v)]))
        panels.append(drawn)
    return panels


def draw(panels: list[dict], start: float, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.1 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=10)
        if panel["type"] == "heatmap":
            _heatmap(ax, panel, start)
        elif panel["rows"]:
            ax.axis("off")
            text = "\n".join(f"{name}: {value:g}" for name, value in panel["rows"])
            ax.text(0.02, 0.95, text, va="top", family="monospace", fontsize=9, transform=ax.transAxes)
        else:
            for name, points in panel["series"]:
                if points:
                    ax.plot([t - start for t, _ in points], [v for _, v in points], label=name, linewidth=1.2)
            ax.set_xlabel("seconds into the run", fontsize=8)
            if panel["unit"] == "percentunit":
                ax.set_ylim(-0.02, max(1.02, ax.get_ylim()[1]))
            ax.grid(alpha=0.3)
            if panel["series"]:
                ax.legend(fontsize=7, loc="upper left")
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.975))  # room for the title above the top row
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def _heatmap(ax, panel: dict, start: float) -> None:
    """Per-bucket counts over time from cumulative `le` series (Grafana's heatmap of a histogram)."""
    import numpy as np

    series = sorted(((float(le), dict(points)) for le, points in panel["series"] if le not in ("", "+Inf")),
                    key=lambda s: s[0])
    if not series:
        ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
        return
    times = sorted({t for _, points in series for t in points})
    cumulative = np.array([[points.get(t, 0.0) for t in times] for _, points in series])
    per_bucket = np.diff(cumulative, axis=0, prepend=0.0).clip(min=0)
    used = np.nonzero(per_bucket.sum(axis=1))[0]
    lo, hi = (used[0], used[-1] + 1) if len(used) else (0, len(series))
    edges = [s[0] for s in series][lo:hi]
    ax.imshow(per_bucket[lo:hi], aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest",
              extent=(times[0] - start, times[-1] - start, -0.5, len(edges) - 0.5))
    ax.set_yticks(range(len(edges)), [f"<={e:g}" for e in edges], fontsize=7)
    ax.set_xlabel("seconds into the run", fontsize=8)


def wait_ready(url: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server at {url} was not ready within {timeout_s} s")


def phased_run(workload: Path, smoke: bool, rate_interval: str, workdir: Path, profile: Path | None = None,
               step_log: Path | None = None) -> tuple[list[dict], float, str]:
    """Serve `workload` under the adaptive policy (with `profile` as its latency prior, and the
    steps logged to `step_log`, when given) with Prometheus scraping; returns the panels, the
    run's start and a title."""
    port = free_port()
    model = ["--model", "dummy:tiny"] if smoke else []
    extra = [*(["--profile", str(profile)] if profile else []), *(["--step-log", str(step_log)] if step_log else [])]
    serve = [sys.executable, "-m", "adaptive_sarathi.cli", "serve", *model, "--port", str(port),
             "--policy", "adaptive", "--slo-policy", SLO_POLICY, "--max-waiting", "64", *extra]
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        with local_prometheus({"server": f"127.0.0.1:{port}"}, workdir / "prometheus") as api:
            start = time.time()
            bench = [sys.executable, "-m", "adaptive_sarathi.cli", "bench", "--base-url", url, "--workload",
                     str(workload), "--seed", "0", "--no-progress", "--slo-policy", SLO_POLICY]
            if smoke:
                bench += ["--prompts", "token-ids", "--vocab-size", "100"]
            done = subprocess.run(bench, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"bench failed: {done.stderr[-2000:]}")
            print(done.stdout.strip())
            time.sleep(3)  # the last scrapes
            end = time.time()
            board = json.loads(DASHBOARD.read_text())
            names = api.label_values("model_name", "adaptive_sarathi:num_requests_running")
            panels = fetch(api, board, {"model_name": names[0]}, start, end, 1.0, rate_interval)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    prior = f", prior {profile.name}" if profile else ", no prior"
    title = (f"controller tuning: {names[0]}, adaptive under {SLO_POLICY}{prior}, workload {workload.name} "
             f"({os.cpu_count()} CPUs)")
    return panels, start, title


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run on the random tiny model; check the panels, draw nothing (for CI)")
    parser.add_argument("--prometheus", default=None, help="draw from this Prometheus (http://host:port)")
    parser.add_argument("--model-name", default=DEFAULT_NAME, help="with --prometheus: the served model's name")
    parser.add_argument("--last", default="15m", help="with --prometheus: the window drawn, e.g. 15m or 1h")
    parser.add_argument("--start", type=float, default=None, help="with --prometheus: window start, Unix seconds")
    parser.add_argument("--end", type=float, default=None, help="with --prometheus: window end, Unix seconds")
    parser.add_argument("--run", type=Path, default=WORKLOAD, help="workload of the self-contained run")
    parser.add_argument("--profile", type=Path, default=None,
                        help="with --run: latency profile CSV of this host, the adaptive policy's prior (e.g. from "
                             "`adaptive-sarathi profile --from-stats` of an earlier run's --step-log)")
    parser.add_argument("--step-log", type=Path, default=None, help="with --run: log the server's steps here")
    parser.add_argument("--rate-interval", default="10s", help="what $__rate_interval becomes (default 10s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="PNG to write")
    args = parser.parse_args()

    if args.prometheus is not None:
        end = args.end or time.time()
        units = {"s": 1, "m": 60, "h": 3600}
        start = args.start or end - float(args.last[:-1]) * units[args.last[-1]]
        board = json.loads(DASHBOARD.read_text())
        panels = fetch(PrometheusAPI(args.prometheus), board, {"model_name": args.model_name}, start, end,
                       max(1.0, (end - start) / 600), args.rate_interval)
        title = f"controller tuning: {args.model_name}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            workload = Path(tmp) / "smoke.yaml" if args.smoke else args.run
            if args.smoke:
                workload.write_text(SMOKE_WORKLOAD)
            panels, start, title = phased_run(workload, args.smoke, "5s" if args.smoke else args.rate_interval,
                                              Path(tmp), args.profile, args.step_log)
    empty = [p["title"] for p in panels if not any(points for _, points in p["series"]) and not p["rows"]]
    print(f"{len(panels)} panels, {sum(len(p['series']) + len(p['rows']) for p in panels)} series; "
          f"empty: {', '.join(empty) or 'none'}")
    if args.smoke:
        if empty:
            raise SystemExit(f"panels without data: {empty}")
        return
    draw(panels, start, title, args.out)


if __name__ == "__main__":
    main()
