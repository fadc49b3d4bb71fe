"""Run a benchmark: send the workload on its arrival schedule, collect timings, report."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tqdm import tqdm

from adaptive_sarathi import exit_codes
from adaptive_sarathi.bench.client import RequestResult, request_url, send_completion
from adaptive_sarathi.bench.config import DEFAULT_VOCAB_SIZE, BenchConfig
from adaptive_sarathi.bench.record import write_json
from adaptive_sarathi.bench.report import format_report, summarize
from adaptive_sarathi.bench.prompts import PromptBuilder, load_bench_tokenizer
from adaptive_sarathi.bench.workload import BenchRequest, draw_workload, make_requests, make_text_requests


@dataclass
class BenchResult:
    summary: dict[str, Any]
    results: list[RequestResult]
    interrupted: bool = False  # stopped by Ctrl-C: summary and results cover the finished requests


@dataclass
class BenchProgress:
    """What a running benchmark has finished, readable when it is interrupted: start_s is the
    perf_counter time of the workload clock's 0 (None before the sending starts), first_arrival_s
    the first request's arrival on that clock, finished in completion order."""

    start_s: float | None = None
    first_arrival_s: float = 0.0
    finished: list[RequestResult] = field(default_factory=list)

    def duration_s(self, now: float) -> float:
        """Seconds from the first request's arrival to `now` (a perf_counter time)."""
        return now - self.start_s - self.first_arrival_s


async def run_benchmark(config: BenchConfig, progress: BenchProgress | None = None) -> BenchResult:
    """Send the whole workload and wait for every answer, appending each finished request to
    `progress` (when given) as it ends. Raises ValueError/FileNotFoundError for a bad trace before
    anything is sent, and aiohttp.ClientError when the server's model list cannot be read (only
    needed when config.model is None)."""
    progress = progress if progress is not None else BenchProgress()
    requests = bench_requests(config)
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    base = config.base_url.rstrip("/")
    limit = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
    # No client-side connection cap: concurrency is the workload's to decide.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        model = config.model or await _first_model(session, base, headers)
        url = request_url(base, config.endpoint)
        chat = config.endpoint == "chat"
        bar = tqdm(total=len(requests), desc="bench", disable=not config.progress)
        progress.first_arrival_s = min((r.arrival_s for r in requests), default=0.0)
        start = progress.start_s = time.perf_counter()

        async def one(request) -> RequestResult:
            await asyncio.sleep(max(0.0, start + request.arrival_s - time.perf_counter()))
            if limit is None:
                result = await send_completion(session, url, model, request, headers, time.perf_counter() - start,
                                               config.slo_class, chat)
            else:
                async with limit:
                    result = await send_completion(session, url, model, request, headers,
                                                   time.perf_counter() - start, config.slo_class, chat)
            progress.finished.append(result)
            bar.update(1)
            return result

        results = await asyncio.gather(*(one(r) for r in requests))
        duration = progress.duration_s(time.perf_counter())
        bar.close()
    return BenchResult(summarize(results, duration, config.slo, config.goodput), list(results))


def bench_requests(config: BenchConfig) -> list[BenchRequest]:
    """The requests `config` sends, in workload order: the drawn workload (identical to
    simulate's for the same flags) with text prompts from the tokenizer, or token-id prompts.
    Raises ValueError/FileNotFoundError for a bad trace or tokenizer, before anything is sent."""
    workload = draw_workload(config)
    if config.prompts == "token-ids":
        return make_requests(workload, config.vocab_size or DEFAULT_VOCAB_SIZE, config.seed)
    return make_text_requests(workload, PromptBuilder(load_bench_tokenizer(config.tokenizer), config.endpoint,
                                                      config.seed))


async def _first_model(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> str:
    async with session.get(f"{base}/v1/models", headers=headers) as response:
        response.raise_for_status()
        return (await response.json())["data"][0]["id"]


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
        result = BenchResult(summarize(finished, progress.duration_s(time.perf_counter()), config.slo,
                                       config.goodput),
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
        print(f"interrupted: reported the {len(result.results)} requests that finished"
              + (f"; wrote {config.json_path}" if config.json_path else ""), file=sys.stderr)
        return exit_codes.INTERRUPTED
    return exit_codes.OK if result.summary["completed"] else exit_codes.FAILURE
