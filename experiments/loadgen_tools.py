"""The third-party load generators third_party_loadgen.py runs: how each is installed (its own
venv, from the package registry, pinned), the command line of one bounded run at a Poisson rate,
and how its report is read back into one row of numbers (ms, and per second).

Each tool is run unchanged: only its documented flags. What each one calls ITL differs and is
kept as the tool defines it (see the results page):
- bench: every gap between consecutive tokens of every request (vLLM's ITL);
- guidellm: per request (latency - TTFT) / (output tokens - 1), then over requests;
- aiperf: per request (last token - first token) / (output tokens - 1), then over requests;
- inference-perf: every gap between consecutive streamed chunks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml


@dataclass(frozen=True)
class Run:
    """One bounded run: `num_requests` requests of `input_len` prompt and `output_len` output
    tokens, Poisson arrivals at `rate` per second drawn from `seed`, to `url` (no /v1) serving
    `model`, whose tokenizer directory is `tokenizer`; the tool writes under `workdir`."""

    url: str
    model: str
    tokenizer: Path
    rate: float
    num_requests: int
    input_len: int
    output_len: int
    seed: int
    workdir: Path


@dataclass(frozen=True)
class Row:
    """A tool's numbers of one run (ms; None where the tool does not report it)."""

    completed: int
    ttft_mean: float | None
    ttft_p50: float | None
    ttft_p99: float | None
    itl_mean: float | None
    itl_p50: float | None
    e2e_mean: float | None
    output_tok_s: float | None
    request_s: float | None
    cpu_s: float | None = None  # CPU seconds the tool's processes used (filled in by the driver)


@dataclass(frozen=True)
class Tool:
    name: str
    package: str  # pinned requirement
    python: str  # interpreter the venv is made from: "3.11" (this one) or "3.12"
    pre_install: tuple[str, ...]  # installed first (guidellm requires torch: the CPU build on disk, not CUDA's)
    command: Callable[[Path, Run], list[str]]  # (venv, run) -> argv
    parse: Callable[[Run], Row]


def venv_bin(venv: Path, program: str) -> str:
    return str(venv / "bin" / program)


def install(tool: Tool, venv: Path, python: str) -> None:
    """Make `venv` from `python` and pip-install the tool there (nothing when it is installed)."""
    if (venv / ".installed").is_file():
        return
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [venv_bin(venv, "python"), "-m", "pip", "install", "-q"]
    if tool.pre_install:
        subprocess.run(pip + list(tool.pre_install), check=True)
    subprocess.run(pip + [tool.package], check=True)
    (venv / ".installed").touch()


# guidellm ---------------------------------------------------------------------------------------

def _guidellm_command(venv: Path, run: Run) -> list[str]:
    return [venv_bin(venv, "guidellm"), "run",
            "--backend", f"kind=openai_http,target={run.url},model={run.model},request_format=/v1/completions",
            "--profile", f"kind=poisson,rate={run.rate}", "--seed", f"kind=static,value={run.seed}",
            "--constraint", f"kind=max_requests,count={run.num_requests}",
            "--data", f"kind=synthetic_text,prompt_tokens={run.input_len},output_tokens={run.output_len}",
            "--tokenizer", f"kind=huggingface_auto,model={run.tokenizer}",
            "--output", f"kind=json,path={run.workdir / 'guidellm.json'}",
            "--disable-progress"]


def _guidellm_parse(run: Run) -> Row:
    metrics = json.loads((run.workdir / "guidellm.json").read_text())["benchmarks"][0]["metrics"]

    def stat(name: str, key: str) -> float | None:
        values = metrics[name]["successful"]
        return values["percentiles"][key] if key.startswith("p") else values[key]

    return Row(completed=int(metrics["request_totals"]["successful"]),
               ttft_mean=stat("time_to_first_token_ms", "mean"), ttft_p50=stat("time_to_first_token_ms", "p50"),
               ttft_p99=stat("time_to_first_token_ms", "p99"),
               itl_mean=stat("inter_token_latency_ms", "mean"), itl_p50=stat("inter_token_latency_ms", "p50"),
               e2e_mean=stat("request_latency", "mean") * 1000,
               output_tok_s=stat("output_tokens_per_second", "mean"),
               request_s=stat("requests_per_second", "mean"))


# aiperf -----------------------------------------------------------------------------------------

def _aiperf_command(venv: Path, run: Run) -> list[str]:
    return [venv_bin(venv, "aiperf"), "profile", "--model", run.model, "--url", run.url,
            "--endpoint-type", "completions", "--streaming", "--tokenizer", str(run.tokenizer),
            "--request-rate", str(run.rate), "--arrival-pattern", "poisson",
            "--request-count", str(run.num_requests), "--random-seed", str(run.seed),
            "--synthetic-input-tokens-mean", str(run.input_len), "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", str(run.output_len), "--output-tokens-stddev", "0",
            "--extra-inputs", "ignore_eos:true", "--output-artifact-dir", str(run.workdir / "aiperf"),
            "--ui-type", "none", "--no-auto-plot"]


def _aiperf_parse(run: Run) -> Row:
    report = json.loads((run.workdir / "aiperf" / "profile_export_aiperf.json").read_text())

    def stat(name: str, key: str) -> float | None:
        return (report.get(name) or {}).get(key)

    return Row(completed=int(stat("request_count", "avg") or 0),
               ttft_mean=stat("time_to_first_token", "avg"), ttft_p50=stat("time_to_first_token", "p50"),
               ttft_p99=stat("time_to_first_token", "p99"),
               itl_mean=stat("inter_token_latency", "avg"), itl_p50=stat("inter_token_latency", "p50"),
               e2e_mean=stat("request_latency", "avg"), output_tok_s=stat("output_token_throughput", "avg"),
               request_s=stat("request_throughput", "avg"))


# inference-perf ---------------------------------------------------------------------------------

def _inference_perf_command(venv: Path, run: Run) -> list[str]:
    duration = max(1, round(run.num_requests / run.rate))
    config = {
        "load": {"type": "poisson", "stages": [{"rate": run.rate, "duration": duration}]},
        "api": {"type": "completion", "streaming": True},
        "server": {"type": "vllm", "model_name": run.model, "base_url": run.url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(run.tokenizer)},
        "data": {"type": "random", "input_distribution": _fixed(run.input_len),
                 "output_distribution": _fixed(run.output_len)},
        "report": {"request_lifecycle": {"summary": True, "per_stage": False, "per_request": False}},
        "storage": {"local_storage": {"path": str(run.workdir / "inference-perf")}},
    }
    path = run.workdir / "inference-perf.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return [venv_bin(venv, "inference-perf"), "--config_file", str(path)]


def _fixed(length: int) -> dict:
    return {"min": length, "max": length, "mean": length, "std_dev": 0, "total_count": 1000}


def _inference_perf_parse(run: Run) -> Row:
    (report_file,) = (run.workdir / "inference-perf").rglob("summary_lifecycle_metrics.json")
    report = json.loads(report_file.read_text())
    success = report["successes"]
    latency = success["latency"]

    def ms(name: str, key: str) -> float | None:
        value = (latency.get(name) or {}).get(key)
        return None if value is None else value * 1000

    throughput = success.get("throughput", {})
    return Row(completed=int(success["count"]),
               ttft_mean=ms("time_to_first_token", "mean"), ttft_p50=ms("time_to_first_token", "median"),
               ttft_p99=ms("time_to_first_token", "p99"),
               itl_mean=ms("inter_token_latency", "mean"), itl_p50=ms("inter_token_latency", "median"),
               e2e_mean=ms("request_latency", "mean"), output_tok_s=throughput.get("output_tokens_per_sec"),
               request_s=throughput.get("requests_per_sec"))


TOOLS = {
    "guidellm": Tool("guidellm", "guidellm==0.8.1", "3.11", ("torch==2.13.0",), _guidellm_command, _guidellm_parse),
    "aiperf": Tool("aiperf", "aiperf==0.13.0", "3.11", (), _aiperf_command, _aiperf_parse),
    "inference-perf": Tool("inference-perf", "inference-perf==0.7.0", "3.12", (), _inference_perf_command,
                           _inference_perf_parse),
}
