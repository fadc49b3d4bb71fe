"""What the optional sampling work costs per step, and that requests which ask for none pay none:
the engine's sampler (engine/sampler.py) on the same logits with no option, with the penalties
(presence, frequency and repetition over a 512-token prompt and 128 outputs per row), with
min_tokens, and sampling followed by logprobs with 5 alternatives.

SmolLM2's vocabulary (49,152) in float32 logits, rows of 1 to 64 requests at temperature 0.8,
seeded by row. Each number is the median wall time of one call (device synchronized) over
--repeats calls. Results: sampler_options_bench.{json,md} under --out (default $OUT, else
experiments/results/). --smoke: a 1,000-token vocabulary, 1 and 4 rows, printed only (for CI).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from adaptive_sarathi.engine.batch import SamplingHistory
from adaptive_sarathi.engine.profiling.profiler import device_name
from adaptive_sarathi.engine.sampler import logprobs, sample
from adaptive_sarathi.engine.sampling_params import SamplingParams

from sampler_bench import median_ms

VOCAB = 49_152
PROMPT_LEN, OUTPUT_LEN = 512, 128
BASE = SamplingParams(max_tokens=1024, temperature=0.8, seed=1)
SETTINGS = {"no option": BASE,
            "penalties": replace(BASE, presence_penalty=0.5, frequency_penalty=0.5, repetition_penalty=1.1),
            "min_tokens": replace(BASE, min_tokens=1000),
            "logprobs 5": replace(BASE, logprobs=5)}


def step(logits, params, outputs, histories, generator):
    """One step's sampling as the model runner does it: histories only where needed, logprobs
    only where asked."""
    needed = histories if any(p.needs_history for p in params) else None
    tokens = sample(logits, params, outputs, generator, needed)
    if any(p.logprobs is not None for p in params):
        logprobs(logits, tokens, [p.logprobs for p in params])
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,16,64", help="comma-separated numbers of sampling rows")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else experiments/results/)")
    parser.add_argument("--smoke", action="store_true", help="small vocabulary, 1 and 4 rows, no results file")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on a CPU (default 1: a shared CPU's other load makes more of them noise)")
    args = parser.parse_args()
    vocab = 1000 if args.smoke else VOCAB
    if args.smoke:
        args.rows, args.repeats = "1,4", 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    generator = torch.Generator(device=device).manual_seed(0)
    rng = random.Random(0)
    results = {"card": device_name(device), "torch": torch.__version__, "vocab": vocab,
               "threads": torch.get_num_threads(),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": []}
    lines = ["# Sampling options per step\n", f"- card: {results['card']} ({results['threads']} torch threads)",
             f"- torch: {torch.__version__}", f"- date: {results['date']}",
             f"- vocabulary: {vocab}, float32 logits, histories of {PROMPT_LEN} prompt + {OUTPUT_LEN} output "
             f"tokens, median of {args.repeats} calls\n",
             "| rows | setting | ms per step | vs no option |", "|---:|---|---:|---:|"]
    for n in map(int, args.rows.split(",")):
        logits = torch.randn(n, vocab, device=device, generator=generator)
        histories = [SamplingHistory([rng.randrange(vocab) for _ in range(PROMPT_LEN)],
                                     [rng.randrange(vocab) for _ in range(OUTPUT_LEN)], (0, 1)) for _ in range(n)]
        outputs = [OUTPUT_LEN] * n
        plain = None
        for name, p in SETTINGS.items():
            params = [p] * n
            ms = median_ms(lambda: step(logits, params, outputs, histories, generator), device, args.repeats)
            plain = ms if plain is None else plain
            results["rows"].append({"rows": n, "setting": name, "ms": ms})
            lines.append(f"| {n} | {name} | {ms:.3f} | {ms / plain:.2f}x |")
            print(lines[-1], flush=True)
    if args.smoke:
        return
    out = Path(args.out or os.environ.get("OUT") or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampler_options_bench.json").write_text(json.dumps(results, indent=2))
    (out / "sampler_options_bench.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
