"""Benchmark summary: latency percentiles, throughput and goodput, as a dict and as a table."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adaptive_sarathi.bench.client import RequestResult
from adaptive_sarathi.bench.slo import is_good, judge_slo, meets_slo
from adaptive_sarathi.controller.slo import LatencyTarget

LATENCIES = {"ttft_ms": "TTFT", "tpot_ms": "TPOT (per request)", "itl_ms": "ITL/TBT (per gap)",
             "e2el_ms": "E2E latency"}


def summarize(results: list[RequestResult], duration_s: float, slo: Mapping[str, LatencyTarget],
              goodput: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Counts, throughputs (per second of `duration_s`) and latency statistics (ms) over the
    successful requests: TTFT, TPOT (per request), ITL (per gap between tokens, over all gaps of
    all requests) and E2E latency. With targets in `slo`: "slo" holds each target judged at its
    percentile (bench.slo.judge_slo: observed value, met, attainment), "slo_met" whether every
    target holds, "goodput" the requests per second meeting every target and "slo_attainment"
    their fraction. With vLLM's `goodput` targets (seconds by key): "request_goodput", the
    requests per second that succeeded within all of them, and "goodput_targets_ms"."""
    ok = [r for r in results if r.success]
    output_tokens = sum(r.output_tokens for r in ok)
    per_s = (lambda count: count / duration_s) if duration_s > 0 else (lambda count: 0.0)
    summary: dict[str, Any] = {
        "num_requests": len(results),
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration_s,
        "total_input_tokens": sum(r.prompt_len for r in ok),
        "total_output_tokens": output_tokens,
        "request_throughput": per_s(len(ok)),
        "output_throughput": per_s(output_tokens),
        "total_token_throughput": per_s(output_tokens + sum(r.prompt_len for r in ok)),
        "ttft_ms": _stats([r.ttft_s for r in ok]),
        "tpot_ms": _stats([r.tpot_s for r in ok if r.output_tokens > 1]),
        "itl_ms": _stats([gap for r in ok for gap in r.itl_s]),
        "e2el_ms": _stats([r.e2e_s for r in ok]),
    }
    if goodput:
        summary["goodput_targets_ms"] = {key: target * 1000 for key, target in goodput.items()}
        summary["request_goodput"] = per_s(sum(is_good(r, goodput) for r in results))
    if slo:
        good = sum(meets_slo(r, slo) for r in results)
        summary["slo"] = judge_slo(results, slo)
        summary["slo_met"] = all(entry["met"] for entry in summary["slo"].values())
        summary["goodput"] = per_s(good)
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
    if "request_goodput" in summary:
        targets = " ".join(f"{k}:{ms:g}" for k, ms in summary["goodput_targets_ms"].items())
        rows.append((f"Request goodput (req/s) [{targets}]", f"{summary['request_goodput']:.2f}"))
    if "slo" in summary:
        rows += [("SLO", ", ".join(f"{k} P{e['percentile']:g} <= {e['target_ms']:g} ms"
                                   for k, e in summary["slo"].items()))]
        for key, e in summary["slo"].items():
            observed = (f"{e['observed_ms']:.2f}" if e["observed_ms"] is not None
                        else "n/a" if e["met"] else "inf")  # no sample, or failures in the tail
            within = f"{e['attainment']:.1%} of requests"
            if "gap_attainment" in e:
                within = f"{e['gap_attainment']:.1%} of gaps, " + within
            rows.append((f"  {key} P{e['percentile']:g}{' per gap' if key == 'tbt' else ''} (ms)",
                         f"{observed} {'holds' if e['met'] else 'MISSED'} ({within} within)"))
        rows += [("Every SLO target holds", "yes" if summary["slo_met"] else "no"),
                 ("Goodput (req/s)", f"{summary['goodput']:.2f}"),
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
