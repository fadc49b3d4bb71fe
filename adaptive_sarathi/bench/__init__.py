"""A load generator for OpenAI-compatible servers, in the manner of `vllm bench serve`."""

from adaptive_sarathi.bench.config import BenchConfig
from adaptive_sarathi.bench.run import BenchResult, run_benchmark, run_benchmark_cli

__all__ = ["BenchConfig", "BenchResult", "run_benchmark", "run_benchmark_cli"]
