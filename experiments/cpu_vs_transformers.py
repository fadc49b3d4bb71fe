"""CPU benchmark: the engine against Hugging Face transformers `generate` on the embedded SmolLM2.

Two measurements, both float32 on this machine's CPU, same weights, greedy, EOS ignored:
  1. single-request decode speed: tokens/s after the first token, one prompt;
  2. throughput for 16 concurrent requests of mixed lengths (sharegpt_8k rows when the trace is
     present, else a seeded synthetic mix): output tokens/s; transformers runs them as one padded
     batch (its best static batching) and must generate up to the longest requested output.
Prints a table; the full mode also writes experiments/results/cpu_vs_transformers.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from datetime import date
from pathlib import Path

import torch

from adaptive_sarathi import LLM, SamplingParams
from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.workloads import SHARED_TRACES, load_trace

RESULTS = Path(__file__).parent / "results" / "cpu_vs_transformers.md"


def request_mix(n: int, max_prompt: int, max_output: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    trace = SHARED_TRACES / "sharegpt_8k.csv"
    if trace.exists():
        rows = rng.sample(load_trace(trace), n)
        return [(min(r.num_prompt_tokens, max_prompt), min(r.num_output_tokens, max_output)) for r in rows]
    return [(rng.randint(16, max_prompt), rng.randint(8, max_output)) for _ in range(n)]


def random_prompt(length: int, vocab: int, rng: random.Random) -> list[int]:
    # Ordinary text-token ids (skipping the specials at the start of the vocabulary).
    return [rng.randrange(100, vocab) for _ in range(length)]


def time_ours(llm: LLM, prompts: list[list[int]], outputs: list[int]) -> float:
    params = [SamplingParams(max_tokens=o, ignore_eos=True) for o in outputs]
    start = time.perf_counter()
    results = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    assert [len(r.token_ids) for r in results] == outputs
    return elapsed


def time_hf(hf, prompts: list[list[int]], outputs: list[int]) -> float:
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding, as decoder-only batching requires
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    start = time.perf_counter()
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=max(outputs), min_new_tokens=max(outputs),
                          do_sample=False, eos_token_id=None, pad_token_id=0)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == width + max(outputs)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no results file (for CI)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    import transformers

    llm = LLM(None, scheduler="sarathi", token_budget=512)
    source_dir = resolve_model(None).weights_path
    hf = transformers.AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32).eval()
    vocab = llm.engine.executor.vocab_size

    decode_tokens = 8 if args.smoke else 128
    prompt = [random_prompt(32 if args.smoke else 64, vocab, rng)]
    # Decode speed = extra tokens over extra time, so prefill and start-up cancel out.
    rows = []
    t1_ours, tn_ours = time_ours(llm, prompt, [1]), time_ours(llm, prompt, [decode_tokens + 1])
    t1_hf, tn_hf = time_hf(hf, prompt, [1]), time_hf(hf, prompt, [decode_tokens + 1])
    ours_tps, hf_tps = decode_tokens / (tn_ours - t1_ours), decode_tokens / (tn_hf - t1_hf)
    rows.append(("single-request decode, tokens/s", hf_tps, ours_tps))

    n = 4 if args.smoke else 16
    mix = request_mix(n, max_prompt=64 if args.smoke else 512, max_output=8 if args.smoke else 128, seed=args.seed)
    prompts = [random_prompt(p, vocab, rng) for p, _ in mix]
    outputs = [o for _, o in mix]
    useful = sum(outputs)
    t_ours, t_hf = time_ours(llm, prompts, outputs), time_hf(hf, prompts, outputs)
    rows.append((f"{n} concurrent mixed requests, output tokens/s", useful / t_hf, useful / t_ours))

    header = "| measurement | transformers | adaptive-sarathi | ratio |\n|---|---|---|---|"
    lines = [f"| {name} | {h:.1f} | {o:.1f} | {o / h:.2f}x |" for name, h, o in rows]
    table = "\n".join([header, *lines])
    print(table)
    print(f"requests (prompt, output tokens): {mix}")
    if not args.smoke:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            f"# CPU: adaptive-sarathi vs transformers {transformers.__version__} generate (SmolLM2-135M, float32)\n\n"
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}; date {date.today()}; seed {args.seed}.\n"
            f"Produced by `python experiments/cpu_vs_transformers.py`.\n\n{table}\n\n"
            f"Concurrent requests (prompt, output tokens): {mix}\n")


if __name__ == "__main__":
    main()
