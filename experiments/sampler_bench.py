"""Sampling time per step: the engine's batched sampler against a per-row loop (one softmax,
filter and torch.multinomial per sampling row, each ending in a device sync), on the same logits.

Llama-3's vocabulary (128,256) in float32 logits, rows of 1 to 256 requests, three settings:
temperature alone, temperature with top-p 0.9, and seeded temperature. Each number is the
median wall time of one call (device synchronized) over --repeats calls. Results:
sampler_bench.{json,md} under --out (default $OUT, else experiments/results/). --smoke: a
1,000-token vocabulary, 1 and 4 rows, printed only (for CI).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from adaptive_sarathi.engine.profiling.profiler import device_name
from adaptive_sarathi.engine.sampler import sample
from adaptive_sarathi.engine.sampling_params import SamplingParams

VOCAB = 128_256
SETTINGS = {"temperature 0.8": SamplingParams(temperature=0.8),
            "temperature 0.8, top-p 0.9": SamplingParams(temperature=0.8, top_p=0.9),
            "temperature 0.8, seeded": SamplingParams(temperature=0.8, seed=1)}


def per_row_sample(logits: torch.Tensor, params: list[SamplingParams], generator: torch.Generator) -> list[int]:
    """The baseline: each sampling row filtered and drawn on its own (seeds ignored: one
    generator), as a simple engine does."""
    tokens = []
    for row, p in zip(logits.float(), params):
        probs = torch.softmax(row / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            sorted_probs = sorted_probs.masked_fill(sorted_probs.cumsum(-1) - sorted_probs >= p.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        tokens.append(int(torch.multinomial(probs, 1, generator=generator).item()))
    return tokens


def median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,16,64,256", help="comma-separated numbers of sampling rows")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else experiments/results/)")
    parser.add_argument("--smoke", action="store_true", help="small vocabulary, 1 and 4 rows, no results file")
    args = parser.parse_args()
    vocab = 1000 if args.smoke else VOCAB
    if args.smoke:
        args.rows, args.repeats = "1,4", 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator(device=device).manual_seed(0)
    results = {"card": device_name(device), "torch": torch.__version__, "vocab": vocab,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": []}
    lines = ["# Sampling per step: batched vs per-row\n", f"- card: {results['card']}", f"- torch: {torch.__version__}",
             f"- date: {results['date']}", f"- vocabulary: {vocab}, float32 logits, median of {args.repeats} calls\n",
             "| rows | setting | per-row loop ms | batched ms | speed-up |", "|---:|---|---:|---:|---:|"]
    for n in map(int, args.rows.split(",")):
        logits = torch.randn(n, vocab, device=device, generator=generator)
        for name, p in SETTINGS.items():
            params = [p] * n
            loop = median_ms(lambda: per_row_sample(logits, params, generator), device, args.repeats)
            batched = median_ms(lambda: sample(logits, params, list(range(n)), generator), device, args.repeats)
            results["rows"].append({"rows": n, "setting": name, "per_row_ms": loop, "batched_ms": batched})
            lines.append(f"| {n} | {name} | {loop:.3f} | {batched:.3f} | {loop / batched:.1f}x |")
            print(lines[-1], flush=True)
    if args.smoke:
        return
    out = Path(args.out or os.environ.get("OUT") or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_bench.json").write_text(json.dumps(results, indent=2))
    (out / "sampler_bench.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
