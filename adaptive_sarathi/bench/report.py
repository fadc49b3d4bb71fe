"""Benchmark summary: latency percentiles, throughput and goodput, as a dict and as a table."""

from __future__ import annotations

from typing import Any

import numpy as np

from adaptive_sarathi.bench.client import RequestResult
from adaptive_sarathi.bench.slo import meets_slo

LATENCIES = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "itl_ms": "TBT/ITL", "e2el_ms": "E2E latency"}


def summarize(results: list[RequestResult], duration_s: float, slo_ms: dict[str, float]) -> dict[str, Any]:
    """Counts, throughputs (per second of `duration_s`) and latency statistics (ms) over the
    successful requests; goodput counts those meeting every target of `slo_ms`."""
    ok = [r for r in results if r.success]
    output_tokens = sum(r.output_tokens for r in ok)
    summary: dict[str, Any] = {
        "num_requests": len(results),
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration_s,
        "total_input_tokens": sum(r.prompt_len for r in ok),
        "total_output_tokens": output_tokens,
        "request_throughput": len(ok) / duration_s,
        "output_throughput": output_tokens / duration_s,
        "total_token_throughput": (output_tokens + sum(r.prompt_len for r in ok)) / duration_s,
        "ttft_ms": _stats([r.ttft_s for r in ok]),
        "tpot_ms": _stats([r.tpot_s for r in ok if r.output_tokens > 1]),
        "itl_ms": _stats([gap for r in ok for gap in r.itl_s]),
        "e2el_ms": _stats([r.e2e_s for r in ok]),
    }
    if slo_ms:
        good = sum(meets_slo(r, slo_ms) for r in results)
        summary["slo_ms"] = dict(slo_ms)
        summary["goodput"] = good / duration_s
        summary["slo_attainment"] = good / len(results) if results else 0.0
    return summary


def _stats(values_s: list[float]) -> dict[str, float] | None:
    if not values_s:
        return None
    ms = np.asarray(values_s) * 1000
    return {"mean": float(ms.mean()), "median": float(np.median(ms)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))}


def format_report(summary: dict[str, Any]) -> str:
    """A plain-text table of the summary."""
    lines = ["=" * 20 + " Benchmark result " + "=" * 20]
    rows = [("Successful requests", summary["completed"]), ("Failed requests", summary["failed"]),
            ("Duration (s)", f"{summary['duration_s']:.2f}"),
            ("Total input tokens", summary["total_input_tokens"]),
            ("Total output tokens", summary["total_output_tokens"]),
            ("Request throughput (req/s)", f"{summary['request_throughput']:.2f}"),
            ("Output token throughput (tok/s)", f"{summary['output_throughput']:.2f}"),
            ("Total token throughput (tok/s)", f"{summary['total_token_throughput']:.2f}")]
    if "goodput" in summary:
        targets = ", ".join(f"{k} <= {v:g} ms" for k, v in summary["slo_ms"].items())
        rows += [("SLO", targets), ("Goodput (req/s)", f"{summary['goodput']:.2f}"),
                 ("SLO attainment", f"{summary['slo_attainment']:.1%}")]
    lines += [f"{name:<36}{value}" for name, value in rows]
    for key, title in LATENCIES.items():
        stats = summary[key]
        lines.append(f"{'-' * 18} {title} (ms) {'-' * 18}")
        if stats is None:
            lines.append("  (no data)")
            continue
        lines += [f"  {name:<34}{stats[name]:.2f}" for name in ("mean", "median", "p90", "p99")]
    return "\n".join(lines)
