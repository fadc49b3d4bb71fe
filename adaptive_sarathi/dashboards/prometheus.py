"""A throwaway local Prometheus (Debian's `prometheus` binary) scraping given targets, and its
HTTP query API: what the dashboard test and experiments/render_tuning_dashboard.py run queries on."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BINARY = "prometheus"


def find_binary() -> str | None:
    """The prometheus binary on PATH (Debian: apt-get install prometheus puts it in /usr/bin), or None."""
    return shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").is_file() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusAPI:
    """Queries of a Prometheus at `url` (http://host:port) through /api/v1. Raises RuntimeError
    naming the query when Prometheus answers an error."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _get(self, path: str, params: Mapping[str, str]) -> object:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every series an instant query answers (a scalar as one unlabelled row)."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[tuple[dict[str, str],
                                                                                             list[tuple[float, float]]]]:
        """(labels, [(time, value), ...]) of every series of a range query."""
        data = self._get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step_s}"})
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    def label_values(self, label: str, metric: str) -> list[str]:
        return list(self._get(f"/api/v1/label/{label}/values", {"match[]": metric}))

    def targets_up(self) -> dict[str, bool]:
        """job -> whether its last scrape succeeded, for every active target."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return {t["labels"]["job"]: t["health"] == "up" for t in data["activeTargets"]}


def config_text(targets: Mapping[str, str], scrape_interval_s: float) -> str:
    """A prometheus.yml scraping each job -> host:port of `targets` every scrape_interval_s."""
    jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{address}']\n"
                   for job, address in targets.items())
    interval = f"{scrape_interval_s:g}s"
    return f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nscrape_configs:\n{jobs}"


@contextmanager
def local_prometheus(targets: Mapping[str, str], workdir: Path, scrape_interval_s: float = 1.0,
                     binary: str | None = None, ready_timeout_s: float = 60.0) -> Iterator[PrometheusAPI]:
    """Run Prometheus on a free loopback port with its data in `workdir`, scraping `targets`
    (job -> host:port), until every target was scraped once; yield its API; stop it on exit.
    Raises FileNotFoundError without the binary, RuntimeError (with its log's tail) when it
    exits or is not ready in time."""
    binary = binary or find_binary()
    if binary is None:
        raise FileNotFoundError("no prometheus binary: apt-get install prometheus (Debian) or put one on PATH")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(config_text(targets, scrape_interval_s))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d"],
                               stdout=log, stderr=subprocess.STDOUT)
    api = PrometheusAPI(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({process.returncode}): {_tail(workdir)}")
            try:
                up = api.targets_up()
                if set(up) == set(targets) and all(up.values()):
                    break
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not scrape {dict(targets)} within {ready_timeout_s} s: "
                                   f"{_tail(workdir)}")
            time.sleep(0.2)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _tail(workdir: Path, lines: int = 15) -> str:
    return "\n".join((workdir / "prometheus.log").read_text().splitlines()[-lines:])
