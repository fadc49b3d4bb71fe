"""Two replicas of llama-3-8b on one GPU against one replica, real time, driven by `bench`.

One invocation serves one configuration (--config): `single` (one engine, `serve` as usual) or a
routing policy (`round_robin`, `least_outstanding`, `headroom`: `serve --replicas 2
--gpus-per-replica 0.5`, two engines on the same GPU behind the ingress). The server is started
once; `bench` then sends the mixed workload (examples/workloads/chat_and_batch.yaml: sharegpt_8k
chat in class interactive, arxiv_4k summaries in class batch) at each rate of --rates in turn,
each run its own `--json`. Every replica runs the adaptive policy under llama-3-8b-h100-tiered,
with the H200 profile as its prior, dummy llama-3-8b weights, prefix caching off (bench's random
prompts share nothing anyway) and the same KV cache per replica (--num-kv-blocks, so that two
engines sizing their caches at once on one card cannot race for the free memory).

Each run is judged per class (TTFT at the class's percentile over its requests, a failed or
refused request counting as never served; TBT over its token gaps); the SLO capacity reported
is the highest rate of the ladder at which every class met its targets (a ladder, not a
bisection: a GPU's time is dear). `--report DIR` reads every run under DIR and writes
experiments/results/replica_gpu.md with the ratio of each two-replica capacity to the single
one (the issue's target: >= 1.8x).

    python experiments/replica_gpu.py --config single --rates 12,16,20,24,28 --out-dir $OUT/single
    python experiments/replica_gpu.py --config headroom --rates 24,32,40,48,56 --out-dir $OUT/headroom
    python experiments/replica_gpu.py --report $OUT

--smoke: the same flow on the CPU with the embedded model, a tiny workload at one rate, two
replicas with round robin, judged against the relaxed CPU SLO; it checks that the pieces fit.
Needs a GPU and the `replicas` extra (ray[serve]) for the real runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np

from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.simulator.slo import check_percentile

ROOT = Path(__file__).resolve().parent
PROFILE = ROOT / "profiles" / "h200_llama-3-8b_served_periods_2026-12-03.csv"
SLO = "llama-3-8b-h100-tiered"
MIXED = ROOT.parent / "examples" / "workloads" / "chat_and_batch.yaml"
CONFIGS = ("single", "round_robin", "least_outstanding", "headroom")
KV_BLOCKS = 10_000  # 160k tokens of llama-3-8b KV (2 MiB a block) per replica: both fit beside their weights
START_TIMEOUT_S = 420.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(config: str, port: int, smoke: bool) -> list[str]:
    cli = [sys.executable, "-m", "adaptive_sarathi.cli", "serve", "--port", str(port), "--max-waiting", "100000"]
    if smoke:
        cli += ["--device", "cpu", "--max-model-len", "512", "--num-kv-blocks", "256", "--policy", "adaptive",
                "--slo-policy", "smollm2-cpu-relaxed"]
    else:
        cli += ["--model", "dummy:llama-3-8b", "--max-model-len", "8192", "--num-kv-blocks", str(KV_BLOCKS),
                "--policy", "adaptive", "--slo-policy", SLO, "--profile", str(PROFILE), "--no-prefix-caching"]
    if config != "single":
        cli += ["--replicas", "2", "--routing", config]
        if not smoke:
            cli += ["--gpus-per-replica", "0.5"]
    return cli


def wait_ready(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    """Until /health answers 200 (RuntimeError if the server exits or the timeout passes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")


def bench(port: int, rate: float, num_requests: int, out: Path, smoke: bool) -> None:
    cli = [sys.executable, "-m", "adaptive_sarathi.cli", "bench", "--base-url", f"http://127.0.0.1:{port}",
           "--json", str(out), "--no-progress", "--seed", "0"]
    if smoke:
        cli += ["--input-len", "32", "--output-len", "8", "--num-requests", str(num_requests), "--qps", str(rate)]
    else:
        # bench takes a workload file's rate and count from the file: write the mix at this rate.
        import yaml

        spec = yaml.safe_load(MIXED.read_text())
        spec["phases"][0].update(qps=rate, num_requests=num_requests)
        path = out.with_suffix(".workload.yaml")
        path.write_text(yaml.safe_dump(spec))
        cli += ["--workload", str(path), "--prompts", "token-ids"]
    subprocess.run(cli, check=True, timeout=max(120.0, 4 * num_requests / rate + 120.0))


def judge(path: Path, slo_name: str, rate: float) -> dict:
    """Per class of the run in `path`: TTFT and TBT at their percentiles against the targets."""
    document = json.loads(path.read_text())
    slo = load_slo_policy(slo_name)
    requests = document["requests"]
    classes = sorted({r.get("slo_class") for r in requests}, key=str)
    out = {"qps": rate, "num_requests": len(requests),
           "num_failed": sum(not r["success"] for r in requests), "classes": {}}
    for name in classes:
        mine = [r for r in requests if r.get("slo_class") == name]
        targets = slo.as_targets().targets_for(slo.resolve_class(name))
        ttft = np.array([r["ttft_s"] if r["success"] else math.inf for r in mine])
        gaps = np.concatenate([np.asarray(r["itl_s"], dtype=float) for r in mine if r["success"]] or [np.empty(0)])
        entry = {"num_requests": len(mine)}
        met = True
        if targets.ttft_s is not None:
            c = check_percentile(ttft, targets.ttft_s, targets.ttft_percentile)
            entry["ttft_p_s"], entry["ttft_target_s"] = c.observed_s, targets.ttft_s
            met &= c.met
        if targets.tbt_s is not None:
            c = check_percentile(gaps, targets.tbt_s, targets.tbt_percentile)
            entry["tbt_p_s"], entry["tbt_target_s"] = c.observed_s, targets.tbt_s
            met &= c.met
        entry["met"] = bool(met)
        out["classes"][str(name)] = entry
    out["met"] = all(e["met"] for e in out["classes"].values())
    return out


def run_config(config: str, rates: list[float], out_dir: Path, num_requests: int, smoke: bool) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = open(out_dir / "server.log", "w")
    server = subprocess.Popen(serve_command(config, port, smoke), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_ready(port, server, START_TIMEOUT_S)
        time.sleep(2.0)  # the ingress's first polls
        for rate in rates:
            path = out_dir / f"bench_{config}_{rate:g}.json"
            bench(port, rate, num_requests, path, smoke)
            verdict = judge(path, "smollm2-cpu-relaxed" if smoke else SLO, rate)
            (out_dir / f"judged_{config}_{rate:g}.json").write_text(json.dumps({"config": config, **verdict},
                                                                              indent=1))
            print(f"{config} at {rate:g} qps: {'met' if verdict['met'] else 'missed'} "
                  f"{json.dumps(verdict['classes'])}", flush=True)
    finally:
        # SIGTERM to the server alone: it stops its replicas through Ray, which must still be up.
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(server.pid, signal.SIGKILL)  # whatever of the session is left (Ray's processes)
        except ProcessLookupError:
            pass
        log.close()
    return 0


def report(dirs: list[Path]) -> str:
    judged = [json.loads(p.read_text()) for d in dirs for p in sorted(d.rglob("judged_*.json"))]
    capacity = {}
    for c in CONFIGS:
        held = [j["qps"] for j in judged if j["config"] == c and j["met"]]
        tried = [j["qps"] for j in judged if j["config"] == c]
        if tried:
            capacity[c] = (max(held) if held else 0.0, sorted(tried))
    lines = ["# Two replicas of llama-3-8b on one GPU against one, real time", "",
             f"Produced by `python experiments/replica_gpu.py --report DIR` on {date.today()} from the runs of "
             "`--config CONFIG --rates ...` under DIR (see the script's docstring for the commands, the workload and "
             f"the SLO policy {SLO}). SLO capacity: the highest rate of the ladder at which every class met its "
             "targets; a ladder, so the true capacity lies between it and the next rate tried.", "",
             "| config | SLO capacity qps (ladder) | rates tried | / single |", "|---|---:|---|---:|"]
    single = capacity.get("single", (0.0, []))[0]
    for c, (qps, tried) in capacity.items():
        ratio = f"{qps / single:.2f}" if single and c != "single" else ""
        lines.append(f"| {c} | {qps:g} | {', '.join(f'{t:g}' for t in tried)} | {ratio} |")
    lines += ["", "## Every run", "", "| config | qps | met | failed | per class (TTFT p / target s, TBT p / target ms) |",
              "|---|---:|---|---:|---|"]
    for j in sorted(judged, key=lambda j: (CONFIGS.index(j["config"]), j["qps"])):
        per = "; ".join(f"{name}: {e.get('ttft_p_s', float('nan')):.2f}/{e.get('ttft_target_s', float('nan')):g}, "
                        f"{1000 * e.get('tbt_p_s', float('nan')):.0f}/{1000 * e.get('tbt_target_s', float('nan')):.0f}"
                        for name, e in j["classes"].items())
        lines.append(f"| {j['config']} | {j['qps']:g} | {'yes' if j['met'] else 'no'} | {j['num_failed']} | {per} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=CONFIGS, default=None)
    parser.add_argument("--rates", default=None, help="comma-separated request rates, in the order run")
    parser.add_argument("--num-requests", type=int, default=400, help="requests per run (the workload file's 400)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--report", type=Path, nargs="+", default=None, metavar="DIR",
                        help="write experiments/results/replica_gpu.md from the runs under DIR")
    parser.add_argument("--smoke", action="store_true", help="CPU, embedded model, tiny workload")
    args = parser.parse_args(argv)
    if args.report:
        text = report(args.report)
        (ROOT / "results" / "replica_gpu.md").write_text(text)
        print(text)
        return 0
    if args.smoke:
        import tempfile

        out = Path(args.out_dir or tempfile.mkdtemp(prefix="replica_gpu_smoke_"))
        run_config("round_robin", [2.0], out, 6, smoke=True)
        print(report([out]))
        return 0
    if args.config is None or args.rates is None or args.out_dir is None:
        parser.error("give --config, --rates and --out-dir (or --report DIR, or --smoke)")
    return run_config(args.config, [float(r) for r in args.rates.split(",")], args.out_dir, args.num_requests,
                      smoke=False)


if __name__ == "__main__":
    sys.exit(main())
