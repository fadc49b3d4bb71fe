"""CPU generate speed against torch's thread count, to choose the engine's default.

Each run is a fresh subprocess (torch's thread pool is process-wide and fixed once used) that
builds LLM(num_threads=N) on the embedded SmolLM2-135M-Instruct and generates greedily from one
prompt with ignore_eos, reporting decode tokens/s and TTFT. Thread counts: 1, 2, torch's own
default (the host's logical CPUs) and what the engine's default rule picks; runs of the counts are
interleaved so that a change in the host's load hits every count alike.

    python experiments/cpu_threads.py            # 3 repeats, 64 tokens; writes results/cpu_threads.md
    python experiments/cpu_threads.py --smoke    # 1 repeat of 1 thread, 8 tokens; prints only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_threads.md"
PROMPT = "Once upon a time, in a village by the sea, there lived"


def _one_run(threads: int, max_tokens: int, seed: int) -> dict:
    from adaptive_sarathi import LLM, SamplingParams

    llm = LLM(num_threads=threads, seed=seed)
    llm.generate(PROMPT, SamplingParams(max_tokens=4, ignore_eos=True))  # first-call costs out of the timing
    out = llm.generate(PROMPT, SamplingParams(max_tokens=max_tokens, ignore_eos=True, seed=seed))[0]
    t = out.timeline
    decode_s = t.finished_time - t.first_token_time
    return {"threads": threads, "tok_s": (len(out.token_ids) - 1) / decode_s, "ttft_ms": t.ttft * 1e3}


def _measure(threads: int, max_tokens: int, seed: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            f"from cpu_threads import _one_run; print(json.dumps(_one_run({threads}, {max_tokens}, {seed})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"run with {threads} threads failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short run of 1 thread; write nothing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from adaptive_sarathi.engine.factory import default_num_threads

    torch_default = torch.get_num_threads()
    rule = default_num_threads()
    if args.smoke:
        counts, repeats, max_tokens = [1], 1, 8
    else:
        counts, repeats, max_tokens = sorted({1, 2, torch_default, rule}), args.repeats, args.max_tokens
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for _ in range(repeats):
        for n in counts:
            result = _measure(n, max_tokens, args.seed)
            runs[n].append(result)
            print(f"threads={n}: {result['tok_s']:.1f} tok/s, TTFT {result['ttft_ms']:.0f} ms", flush=True)
    if args.smoke:
        return 0
    best = max(statistics.median(r["tok_s"] for r in runs[n]) for n in counts)
    lines = [
        "# CPU generate speed against torch threads",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Host: {platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"at the end; torch {torch.__version__} (default {torch_default} threads). Model: embedded "
        f"SmolLM2-135M-Instruct, float32, greedy, {max_tokens} tokens with ignore_eos, one prompt; "
        f"{repeats} runs per count, each a fresh process, counts interleaved; median [min, max].",
        f"Engine default (`default_num_threads()`) on this host: {rule}.",
        "",
        "| threads | decode tok/s | TTFT ms | best / this |",
        "|---|---|---|---|",
    ]
    for n in counts:
        tps = [r["tok_s"] for r in runs[n]]
        ttft = [r["ttft_ms"] for r in runs[n]]
        tags = [t for t, v in (("torch default", torch_default), ("engine default", rule)) if v == n]
        label = f"{n} ({', '.join(tags)})" if tags else str(n)
        lines.append(f"| {label} | {statistics.median(tps):.1f} [{min(tps):.1f}, {max(tps):.1f}] | "
                     f"{statistics.median(ttft):.0f} [{min(ttft):.0f}, {max(ttft):.0f}] | "
                     f"{best / statistics.median(tps):.2f} |")
    lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
