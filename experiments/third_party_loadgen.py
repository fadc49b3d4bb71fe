"""Third-party load generators against `adaptive-sarathi serve`, beside `adaptive-sarathi bench`.

guidellm and aiperf (and inference-perf, which needs Python 3.12, where such an interpreter is
found) are each installed unchanged in a venv of their own from the package registry, pointed at
`adaptive-sarathi tokenizer-path` for the tokenizer, and run for a short bounded run at one
Poisson rate against a fresh server on the embedded SmolLM2 (completions, streamed, fixed prompt
and output lengths); `adaptive-sarathi bench` runs the same way. Every run is set against the
server's own Prometheus histograms of that run (TTFT, inter-token latency, E2E: means from the
histograms' sums, medians interpolated in their buckets), so each tool's numbers can be checked
against what the server measured. Prefix caching is off so every tool's prompts cost the same.

    python experiments/third_party_loadgen.py            # writes experiments/results/third_party_loadgen.md
    python experiments/third_party_loadgen.py --smoke    # bench only (and tools already installed), tiny

Tool venvs live under --venv-dir (default out/loadgen-venvs, ignored by git); the first full
run installs them (minutes: guidellm pulls torch, the CPU build on disk).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen_tools import TOOLS, Row, Run, install  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "third_party_loadgen.md"
MODEL = "SmolLM2-135M-Instruct"
_CLI = [sys.executable, "-m", "adaptive_sarathi.cli"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="4 short requests, bench and installed tools only")
    parser.add_argument("--rate", type=float, default=0.5, help="Poisson request rate (per second)")
    parser.add_argument("--num-requests", type=int, default=24)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tools", default="bench,guidellm,aiperf,inference-perf")
    parser.add_argument("--venv-dir", type=Path, default=ROOT / "out" / "loadgen-venvs")
    parser.add_argument("--results", type=Path, default=None, help=f"results page (default {RESULTS}; smoke: none)")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.num_requests, args.input_len, args.output_len = 2.0, 4, 32, 8
    tokenizer = Path(subprocess.run(_CLI + ["tokenizer-path"], check=True, capture_output=True,
                                    text=True).stdout.strip())
    rows, notes = {}, []
    for name in args.tools.split(","):
        python = _interpreter(name)
        if name != "bench" and python is None:
            notes.append(f"{name}: not run, no Python {TOOLS[name].python} interpreter found; "
                         f"the command it would run is in the docstring of experiments/loadgen_tools.py")
            continue
        venv = args.venv_dir / name
        if name != "bench":
            if args.smoke and not (venv / ".installed").is_file():
                notes.append(f"{name}: not installed, left out of the smoke run")
                continue
            install(TOOLS[name], venv, python)
        with tempfile.TemporaryDirectory(prefix=f"loadgen-{name}-") as workdir:
            run = Run(url="", model=MODEL, tokenizer=tokenizer, rate=args.rate, num_requests=args.num_requests,
                      input_len=args.input_len, output_len=args.output_len, seed=args.seed, workdir=Path(workdir))
            result = _run_tool(name, venv, run)
        if isinstance(result, str):
            notes.append(f"{name}: failed: {result}")
            continue
        rows[name] = result
        tool_row, server_row = result
        print(f"{name}: completed {tool_row.completed}, TTFT mean {_ms(tool_row.ttft_mean)} ms "
              f"(server {_ms(server_row.ttft_mean)}), ITL mean {_ms(tool_row.itl_mean)} ms "
              f"(server {_ms(server_row.itl_mean)})")
    page = _page(args, rows, notes)
    print(page)
    results = args.results or (None if args.smoke else RESULTS)
    if results is not None:
        results.write_text(page)
        print(f"wrote {results}", file=sys.stderr)
    return 0 if rows else 1


def _interpreter(name: str) -> str | None:
    """A Python of the tool's version: this one for 3.11, else python3.12 on PATH or under pyenv."""
    if name == "bench" or TOOLS[name].python == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    version = TOOLS[name].python
    found = shutil.which(f"python{version}")
    if found:
        return found
    pyenv = sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python{version}"))
    return str(pyenv[-1]) if pyenv else None


def _run_tool(name: str, venv: Path, run: Run) -> tuple[Row, Row] | str:
    """Serve, run the tool, read its report and the server's histograms; a string says why not."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    run = Run(**{**run.__dict__, "url": url})
    server_log = (run.workdir / "server.log").open("w")
    server = subprocess.Popen(_CLI + ["serve", "--port", str(port), "--no-enable-prefix-caching",
                                      "--served-model-name", MODEL],
                              stdout=server_log, stderr=subprocess.STDOUT)
    try:
        if not _wait_healthy(url, server, timeout_s=300):
            return f"the server did not start: {(run.workdir / 'server.log').read_text()[-500:]!r}"
        if name == "bench":
            command = _CLI + ["bench", "--base-url", url, "--model", MODEL, "--tokenizer", str(run.tokenizer),
                              "--qps", str(run.rate), "--num-requests", str(run.num_requests),
                              "--input-len", str(run.input_len), "--output-len", str(run.output_len),
                              "--seed", str(run.seed), "--json", str(run.workdir / "bench.json"), "--no-progress"]
        else:
            command = TOOLS[name].command(venv, run)
        log = run.workdir / "tool.log"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with log.open("w") as out:
            # HF_HUB_OFFLINE is not set: aiperf then reads only the hub cache and refuses a path.
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=900,
                                  env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            return f"exit {done.returncode}: {log.read_text()[-400:]!r}"
        tool_row = _bench_parse(run) if name == "bench" else TOOLS[name].parse(run)
        # The tool's own CPU time (its processes, waited for): on a small host it competes with the server.
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return dataclasses.replace(tool_row, cpu_s=cpu_s), _server_row(url)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()


def _bench_parse(run: Run) -> Row:
    import json

    summary = json.loads((run.workdir / "bench.json").read_text())["summary"]
    return Row(completed=summary["completed"], ttft_mean=summary["ttft_ms"]["mean"],
               ttft_p50=summary["ttft_ms"]["median"], ttft_p99=summary["ttft_ms"]["p99"],
               itl_mean=summary["itl_ms"]["mean"], itl_p50=summary["itl_ms"]["median"],
               e2e_mean=summary["e2el_ms"]["mean"], output_tok_s=summary["output_throughput"],
               request_s=summary["request_throughput"])


def _server_row(url: str) -> Row:
    """The server's own view of the run, from /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    histograms = {}
    for family in text_string_to_metric_families(text):
        buckets, total, count = [], 0.0, 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
        if buckets:
            histograms[family.name.removeprefix("adaptive_sarathi:")] = (sorted(buckets), total, count)

    def mean_ms(name: str) -> float | None:
        _, total, count = histograms[name]
        return total / count * 1000 if count else None

    def quantile_ms(name: str, q: float) -> float | None:
        buckets, _, count = histograms[name]
        return None if not count else _bucket_quantile(buckets, q * count) * 1000

    ttft = "time_to_first_token_seconds"
    return Row(completed=int(histograms["e2e_request_latency_seconds"][2]), ttft_mean=mean_ms(ttft),
               ttft_p50=quantile_ms(ttft, 0.5), ttft_p99=quantile_ms(ttft, 0.99),
               itl_mean=mean_ms("inter_token_latency_seconds"),
               itl_p50=quantile_ms("inter_token_latency_seconds", 0.5),
               e2e_mean=mean_ms("e2e_request_latency_seconds"), output_tok_s=None, request_s=None)


def _bucket_quantile(buckets: list[tuple[float, float]], rank: float) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket holding `rank` (cumulative counts)."""
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = upper, cumulative
    return lower


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if urllib.request.urlopen(url + "/health", timeout=5).status == 200:
                return True
        except OSError:
            time.sleep(1)
    return False


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _page(args: argparse.Namespace, rows: dict[str, tuple[Row, Row]], notes: list[str]) -> str:
    lines = [
        "# Third-party load generators against `adaptive-sarathi serve`", "",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores (shared with other work: absolute numbers "
        f"are noisy), Python {platform.python_version()}; {datetime.date.today().isoformat()}.",
        f"Each tool, unchanged, against a fresh `adaptive-sarathi serve --no-enable-prefix-caching` on the "
        f"embedded {MODEL} (CPU): {args.num_requests} streamed `/v1/completions` requests of {args.input_len} "
        f"prompt and {args.output_len} output tokens (ignore_eos), Poisson arrivals at {args.rate:g}/s, seed "
        f"{args.seed}; tokenizer from `adaptive-sarathi tokenizer-path`. Reproduce: "
        f"`python experiments/third_party_loadgen.py` (see its docstring).", "",
        "Each tool's row is followed by the server's own histograms of the same run (`server`: means from "
        "the histogram sums, P50/P99 interpolated in the buckets as Prometheus' histogram_quantile does).", "",
        "| tool | completed | TTFT mean | TTFT P50 | TTFT P99 | ITL mean | ITL P50 | E2E mean | output tok/s | "
        "req/s | tool CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (tool, server) in rows.items():
        for label, row in ((name, tool), (f"{name}: server", server)):
            lines.append(f"| {label} | {row.completed} | {_ms(row.ttft_mean)} | {_ms(row.ttft_p50)} | "
                         f"{_ms(row.ttft_p99)} | {_ms(row.itl_mean)} | {_ms(row.itl_p50)} | {_ms(row.e2e_mean)} | "
                         f"{_ms(row.output_tok_s)} | {'-' if row.request_s is None else f'{row.request_s:.3f}'} | "
                         f"{_ms(row.cpu_s)} |")
    lines += ["", "Latencies in ms. ITL as each tool defines it (experiments/loadgen_tools.py): bench and "
              "inference-perf over every gap, guidellm and aiperf per request ((last - first token) / (tokens "
              "- 1)) then averaged; the server's histogram holds every gap. Tool CPU s: user + system CPU seconds "
              "of the tool's processes over its run, on the same cores as the server."]
    if notes:
        lines += ["", "Notes:", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
