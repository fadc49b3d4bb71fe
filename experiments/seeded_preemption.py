"""Seeded sampling across preemption: do seeded temperature-0.8 requests give the same tokens when
they are preempted and recomputed, and when they run in another batch composition?

The sampler's draw for output i of a seeded request is a fixed uniform u(seed, i) (engine/
sampler.py): inverse-transform sampling picks the first token whose cumulative probability passes
u. So the token can change only if the logits change, and then only if u lies closer to a boundary
of the cumulative distribution than the logits moved it. Recompute after preemption prefills the
prompt and the outputs so far as one chunk, where the first run computed the outputs one decode at
a time: the same math in other matrix shapes, so float32 results differ in the last bits.

Runs on the embedded SmolLM2 (CPU, float32), 16 chat prompts, seed = prompt index, max 32 tokens:
- reference: a roomy KV cache, token budget 512 (every prompt prefilled in one chunk);
- preempted: a KV cache that holds about two requests, so requests are preempted and recomputed;
- rebatched: a roomy cache, token budget 24 and 3 sequences at a time (other chunks and batches,
  no preemption).
For each run against the reference: outputs identical, and for each output that differs, the first
differing position, the distance from the draw to the nearest boundary of the reference's CDF
there (the margin), and the largest |logit| change at that step.

    python experiments/seeded_preemption.py          # writes experiments/results/seeded_preemption.md
    python experiments/seeded_preemption.py --smoke  # 4 prompts, 8 tokens
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaptive_sarathi.engine import model_runner
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.sampler import _SEED_STRIDE, _seeded_uniform
from adaptive_sarathi.engine.sampling_params import SamplingParams

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results" / "seeded_preemption.md"
TEMPERATURE = 0.8
QUESTIONS = ["What is the capital of France?", "Why is the sky blue?", "Name a prime number above 50.",
             "What does a compiler do?", "How many legs has a spider?", "What is photosynthesis?",
             "Write a haiku about rain.", "What is 17 times 3?", "Who wrote Hamlet?", "What is an atom?",
             "Give me a synonym for happy.", "What is the boiling point of water?", "Describe a cat.",
             "What is a black hole?", "Translate 'thank you' to French.", "Why do leaves fall?"]


@dataclass
class Recorder:
    """The logits row (float32, CPU) each seeded draw was made from, by (seed, output index).
    Installed by wrapping the model runner's sample(); the last row recorded for a key wins (a
    recomputed draw replaces the first one's)."""

    rows: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def __enter__(self):
        self._original = model_runner.sample

        def recording(logits, params, num_output_tokens, *args, **kwargs):
            for i, (p, n) in enumerate(zip(params, num_output_tokens)):
                if p.seed is not None:
                    self.rows[(p.seed, n)] = logits[i].float().cpu().clone()
            return self._original(logits, params, num_output_tokens, *args, **kwargs)

        model_runner.sample = recording
        return self

    def __exit__(self, *exc):
        model_runner.sample = self._original


def margin(row: torch.Tensor, seed: int, index: int, temperature: float = TEMPERATURE) -> float:
    """Distance from draw u(seed, index) to the nearest boundary of the tempered softmax's CDF of
    `row` (no top-k/top-p/min-p): how far the CDF could move before the drawn token changes."""
    cdf = torch.softmax(row / temperature, dim=-1).double().cumsum(dim=-1)
    u = _seeded_uniform(seed * _SEED_STRIDE + index) * float(cdf[-1])
    token = min(int(torch.searchsorted(cdf, torch.tensor([u], dtype=torch.float64), right=True)[0]), len(cdf) - 1)
    # 0 below the first token and the total above the last are no boundaries: no change of the
    # logits moves them past a draw.
    distances = ([u - float(cdf[token - 1])] if token > 0 else []) + \
                ([float(cdf[token]) - u] if token < len(cdf) - 1 else [])
    return min(distances, default=float("inf"))


def run(prompts: list[list[int]], max_tokens: int, **engine_args) -> tuple[list[list[int]], Recorder, int]:
    """Token ids per prompt (seed = prompt index), the recorded rows, and the preemptions counted."""
    engine = create_engine(EngineArgs(device="cpu", dtype="float32", **engine_args))
    with Recorder() as recorder:
        ids = [engine.add_request(p, SamplingParams(max_tokens=max_tokens, temperature=TEMPERATURE, seed=i,
                                                    ignore_eos=True))
               for i, p in enumerate(prompts)]
        done, preemptions = {}, 0
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out.token_ids
                    preemptions += out.num_preemptions
    return [done[i] for i in ids], recorder, preemptions


def chat_prompts(count: int) -> list[list[int]]:
    engine = create_engine(EngineArgs(device="cpu", num_kv_blocks=4))
    tok = engine.tokenizer
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True))
            for q in (QUESTIONS * (count // len(QUESTIONS) + 1))[:count]]


def compare(reference: tuple, other: tuple) -> list[dict]:
    """Per differing output: its seed, first differing position, the draw's margin in the
    reference and in the other run, and the largest logit change at that step."""
    (ref_tokens, ref_rows, _), (tokens, rows, _) = reference, other
    diffs = []
    for seed, (a, b) in enumerate(zip(ref_tokens, tokens)):
        if a == b:
            continue
        at = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        ref_row, row = ref_rows.rows[(seed, at)], rows.rows[(seed, at)]
        diffs.append({"seed": seed, "position": at, "margin_ref": margin(ref_row, seed, at),
                      "margin_other": margin(row, seed, at), "max_logit_change": float((ref_row - row).abs().max())})
    return diffs


def logit_changes(reference: tuple, other: tuple) -> list[float]:
    """Largest |logit| change of each draw `other` made on the same prefix as the reference
    (same seed, index, and the same tokens before it)."""
    (ref_tokens, ref_rows, _), (tokens, rows, _) = reference, other
    return [float((ref_rows.rows[key] - row).abs().max()) for key, row in rows.rows.items()
            if key in ref_rows.rows and ref_tokens[key[0]][:key[1]] == tokens[key[0]][:key[1]]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    count, max_tokens = (4, 8) if args.smoke else (16, 32)
    prompts = chat_prompts(count)
    longest = max(len(p) for p in prompts) + max_tokens
    tight = 2 * -(-longest // 16) + 1  # about two requests' blocks: the others wait or are preempted
    runs = {
        "reference": run(prompts, max_tokens, num_kv_blocks=512, token_budget=512),
        "preempted": run(prompts, max_tokens, num_kv_blocks=tight, token_budget=512),
        "rebatched": run(prompts, max_tokens, num_kv_blocks=512, token_budget=24, max_num_seqs=3),
    }
    reference = runs["reference"]
    # Margins of every draw of the reference: how near a boundary draws fall anyway.
    margins = sorted(margin(row, seed, i) for (seed, i), row in reference[1].rows.items())
    lines = ["# Seeded sampling across preemption and batch composition", "",
             f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, float32; "
             f"{datetime.date.today().isoformat()}. `python experiments/seeded_preemption.py"
             f"{' --smoke' if args.smoke else ''}`.",
             f"Embedded SmolLM2-135M-Instruct, {count} chat prompts, temperature {TEMPERATURE}, seed = prompt "
             f"index, {max_tokens} tokens each (ignore_eos). Preempted run: {tight} KV blocks of 16 tokens.", "",
             "| run | preemptions | identical outputs | max / median logit change on the reference's prefixes | "
             "first differences (seed@position: margin ref / other, max logit change there) |",
             "|---|---|---|---|---|"]
    for name, result in runs.items():
        diffs = compare(reference, result) if name != "reference" else []
        shown = "; ".join(f"{d['seed']}@{d['position']}: {d['margin_ref']:.2e} / {d['margin_other']:.2e}, "
                          f"{d['max_logit_change']:.1e}" for d in diffs) or "-"
        same = sum(a == b for a, b in zip(reference[0], result[0]))
        changes = sorted(logit_changes(reference, result))
        shown_changes = f"{changes[-1]:.1e} / {changes[len(changes) // 2]:.1e}" if changes else "-"
        lines.append(f"| {name} | {result[2]} | {same} of {count} | {shown_changes} | {shown} |")
        print(f"{name}: preemptions {result[2]}, identical {same} of {count}")
    small = sum(m < 1e-5 for m in margins)
    lines += ["", f"Margins of the reference run's {len(margins)} draws: {small} below 1e-5 (smallest "
              f"{', '.join(f'{m:.1e}' for m in margins[:3])}); median {margins[len(margins) // 2]:.1e}. A draw "
              "changes token only where the logits' change moves a CDF boundary past it.", ""]
    page = "\n".join(lines)
    print(page)
    results = args.results or (None if args.smoke else RESULTS)
    if results is not None:
        results.write_text(page)
        print(f"wrote {results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
