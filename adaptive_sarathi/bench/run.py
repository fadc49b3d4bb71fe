"""Run a benchmark: send the workload on its arrival schedule, collect timings, report."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from tqdm import tqdm

from adaptive_sarathi import exit_codes
from adaptive_sarathi.bench.client import RequestResult, send_completion
from adaptive_sarathi.bench.report import format_report, summarize
from adaptive_sarathi.bench.slo import SLO_KEYS
from adaptive_sarathi.bench.workload import arrival_offsets, make_requests, request_lengths


@dataclass(frozen=True)
class BenchConfig:
    """A benchmark run against the OpenAI-compatible server at `base_url` (without /v1).

    Lengths come from `trace` (a CSV of num_prefill_tokens,num_decode_tokens) or are
    input_len/output_len. Arrivals: a gamma process at `qps` (burstiness 1 = Poisson; inf = all at
    once), capped at `max_concurrency` in flight. slo_ms: goodput targets in ms (see bench.slo).
    """

    base_url: str = "http://127.0.0.1:8000"
    model: str | None = None
    api_key: str | None = None
    trace: str | None = None
    input_len: int = 128
    output_len: int = 32
    max_total_len: int | None = None
    vocab_size: int = 500
    num_requests: int = 100
    qps: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    seed: int = 0
    slo_ms: dict[str, float] = field(default_factory=dict)
    json_path: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len", "vocab_size", "num_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: use an integer >= 1")
        if not self.qps > 0:
            raise ValueError(f"qps={self.qps} is invalid: use a rate > 0 (inf sends everything at once)")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness={self.burstiness} is invalid: use a gamma shape > 0 (1 = Poisson)")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency={self.max_concurrency} is invalid: use an integer >= 1")
        unknown = set(self.slo_ms) - set(SLO_KEYS)
        if unknown:
            raise ValueError(f"unknown SLO keys {sorted(unknown)}: use {', '.join(SLO_KEYS)}")


@dataclass
class BenchResult:
    summary: dict[str, Any]
    results: list[RequestResult]
    interrupted: bool = False  # stopped by Ctrl-C: summary and results cover the finished requests


@dataclass
class BenchProgress:
    """What a running benchmark has finished, readable when it is interrupted: start_s is the
    perf_counter time of the first send (None before it), finished in completion order."""

    start_s: float | None = None
    finished: list[RequestResult] = field(default_factory=list)


async def run_benchmark(config: BenchConfig, progress: BenchProgress | None = None) -> BenchResult:
    """Send the whole workload and wait for every answer, appending each finished request to
    `progress` (when given) as it ends. Raises ValueError/FileNotFoundError for a bad trace before
    anything is sent, and aiohttp.ClientError when the server's model list cannot be read (only
    needed when config.model is None)."""
    progress = progress if progress is not None else BenchProgress()
    lengths = request_lengths(config.num_requests, config.trace, config.input_len, config.output_len,
                              config.max_total_len, config.seed)
    requests = make_requests(lengths, config.vocab_size, config.seed)
    offsets = arrival_offsets(config.num_requests, config.qps, config.burstiness, config.seed)
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    base = config.base_url.rstrip("/")
    limit = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
    # No client-side connection cap: concurrency is the workload's to decide.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        model = config.model or await _first_model(session, base, headers)
        url = f"{base}/v1/completions"
        bar = tqdm(total=len(requests), desc="bench", disable=not config.progress)
        start = progress.start_s = time.perf_counter()

        async def one(request, offset: float) -> RequestResult:
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            if limit is None:
                result = await send_completion(session, url, model, request, headers, time.perf_counter() - start)
            else:
                async with limit:
                    result = await send_completion(session, url, model, request, headers,
                                                   time.perf_counter() - start)
            progress.finished.append(result)
            bar.update(1)
            return result

        results = await asyncio.gather(*(one(r, t) for r, t in zip(requests, offsets)))
        duration = time.perf_counter() - start
        bar.close()
    return BenchResult(summarize(results, duration, config.slo_ms), list(results))


async def _first_model(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> str:
    async with session.get(f"{base}/v1/models", headers=headers) as response:
        response.raise_for_status()
        return (await response.json())["data"][0]["id"]


def write_json(path: str, config: BenchConfig, result: BenchResult) -> None:
    """The config, the summary and every request's timings (seconds) as one JSON document."""
    settings = {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(config).items()}
    document = {"config": settings, "interrupted": result.interrupted, "summary": result.summary,
                "requests": [{**asdict(r), "tpot_s": r.tpot_s} for r in result.results]}
    with open(path, "w") as f:
        json.dump(document, f, indent=1)


def run_benchmark_cli(config: BenchConfig) -> int:
    """Run, print the report (and write config.json_path). Returns exit_codes.OK when any request
    succeeded, USAGE for a bad trace, FAILURE when the server cannot be reached or nothing
    succeeded, INTERRUPTED after Ctrl-C (the finished requests are reported and written)."""
    progress = BenchProgress()
    try:
        result = asyncio.run(run_benchmark(config, progress))
    except KeyboardInterrupt:
        if progress.start_s is None:
            print("interrupted before the first request: nothing to report", file=sys.stderr)
            return exit_codes.INTERRUPTED
        finished = list(progress.finished)
        result = BenchResult(summarize(finished, time.perf_counter() - progress.start_s, config.slo_ms),
                             finished, interrupted=True)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE
    except (aiohttp.ClientError, OSError) as err:
        print(f"error: cannot reach {config.base_url}: {err}", file=sys.stderr)
        return exit_codes.FAILURE
    print(format_report(result.summary))
    if config.json_path:
        write_json(config.json_path, config, result)
    failures = [r.error for r in result.results if not r.success]
    if failures:
        print(f"{len(failures)} requests failed; first error: {failures[0]}", file=sys.stderr)
    if result.interrupted:
        print(f"interrupted: reported the {len(result.results)} of {config.num_requests} requests that finished"
              + (f"; wrote {config.json_path}" if config.json_path else ""), file=sys.stderr)
        return exit_codes.INTERRUPTED
    return exit_codes.OK if result.summary["completed"] else exit_codes.FAILURE
