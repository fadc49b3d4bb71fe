"""Why a cached prefix still costs TTFT: a 4k-token cached prefix + 100 new tokens against a
100-token prompt, the step taken apart (GPU, in-process, about two minutes).

prefix_caching.py --gpu measured the first at 1.76x the second (target <= 1.2x). The only work
that grows with the cached prefix is attention: the 100 new queries attend 4196 keys instead of
at most 100. This script times

  kernel  the Triton prefill attention kernel alone at llama-3-8b's shapes (32 query heads, 8 KV
          heads, head dim 128, bf16, blocks of 16 at random places in the cache): 100 queries
          over 100 keys (a fresh prompt) and over 4096 cached + 100 keys, with the split-KV path
          as the default policy picks it and with it off (num_splits=1); CUDA-event medians;
  engine  TTFT on a real engine (--model, default dummy:llama-3-8b, attention backend triton,
          CUDA graphs as served): the 100-token prompt and the 4k cached prefix + 100, median of
          --repeats after a warm-up, and the step's GPU time by kernel (torch profiler, one step
          of each): the prefill attention kernels, everything else, and the host time around
          them (the step's wall time less its kernel time); with the split-KV policy and, for
          reference, on a second engine with it off.

Writes cached_prefix_ttft.json and cached_prefix_ttft.md to --out (default $OUT when set, else
experiments/results). --smoke: tiny shapes, few repeats; on a machine without a GPU the kernel
runs in Triton's interpreter and the engine is dummy:smollm2-135m on the CPU with the torch
attention backend, so its numbers mean nothing and only prove the script runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from datetime import date
from pathlib import Path

import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ.setdefault("TRITON_INTERPRET", "1")

from adaptive_sarathi.engine.factory import EngineArgs, create_engine  # noqa: E402
from adaptive_sarathi.engine.sampling_params import SamplingParams  # noqa: E402
from adaptive_sarathi.kernels.attention import triton_prefill  # noqa: E402
from adaptive_sarathi.kernels.attention.metadata import PrefillLayout, PrefillSpan  # noqa: E402
from adaptive_sarathi.kernels.attention.reference import paged_attention_reference  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def paged_chunk(cached: int, new: int, heads: int, kv_heads: int, head_dim: int, block_size: int,
                dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    """q [new, heads, D], random caches holding one sequence of cached + new tokens in blocks at
    random places, and its PrefillLayout."""
    blocks = -(-(cached + new) // block_size)
    num_blocks = blocks + 64
    randn = lambda *s: torch.randn(*s, generator=gen, device=device, dtype=torch.float32).to(dtype)  # noqa: E731
    k_cache = randn(num_blocks, block_size, kv_heads, head_dim)
    v_cache = randn(num_blocks, block_size, kv_heads, head_dim)
    table = torch.randperm(num_blocks, generator=gen, device=device)[:blocks].to(torch.int32)
    layout = PrefillLayout.of([PrefillSpan(0, new, cached, table)], device)
    return randn(new, heads, head_dim), k_cache, v_cache, layout, table


def median_ms(fn, device: torch.device, iters: int) -> float:
    """Median milliseconds of fn() over `iters` calls after three warm-ups (CUDA events on a GPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def kernel_section(args, device: torch.device) -> list[dict]:
    """The prefill kernel's time for `new` queries after 0 and after `cached` cached tokens, split
    by the default policy and not at all; each checked against the plain-torch reference."""
    if args.smoke and device.type != "cuda":
        heads, kv_heads, head_dim, block_size, dtype, cached, new = 4, 2, 16, 4, torch.float32, 96, 8
    else:
        heads, kv_heads, head_dim, block_size, dtype, cached, new = 32, 8, 128, 16, torch.bfloat16, args.cached, args.new
    gen = torch.Generator(device=device).manual_seed(args.seed)
    scale = head_dim ** -0.5
    rows = []
    for prefix in (0, cached):
        q, k, v, layout, table = paged_chunk(prefix, new, heads, kv_heads, head_dim, block_size, dtype, device, gen)
        from adaptive_sarathi.kernels.attention.metadata import AttentionMetadata

        meta = AttentionMetadata(torch.zeros(new, dtype=torch.int64, device=device), 0,
                                 torch.zeros(0, 1, dtype=torch.int32, device=device),
                                 torch.zeros(0, dtype=torch.int32, device=device), 0,
                                 [PrefillSpan(0, new, prefix, table)], block_size)
        ref = paged_attention_reference(q.float(), k.float(), v.float(), meta, scale)
        tiles = layout.num_rows * (heads // kv_heads) // triton_prefill.prefill_config(head_dim, dtype).block_m + 1
        policy = triton_prefill.prefill_split_count(tiles, kv_heads, layout.max_context_len,
                                                    triton_prefill._num_sms(device))
        for label, splits in (("default policy", None), ("off", 1)):
            out = torch.empty_like(q)

            def call():
                triton_prefill.prefill_attention(q, k, v, layout, scale, out, num_splits=splits)

            ms = median_ms(call, device, 3 if args.smoke else 50)
            err = ((out.float() - ref).norm() / ref.norm()).item()
            rows.append({"cached": prefix, "new": new, "split": label, "num_splits": policy if splits is None else 1,
                         "ms": ms, "rel_err": err})
            print(f"kernel: {new} queries after {prefix} cached, split {label} ({rows[-1]['num_splits']}): "
                  f"{ms:.4f} ms, rel err {err:.1e}", flush=True)
    return rows


def engine_ttft(args, device: torch.device, split: bool) -> dict:
    """TTFTs of a `new`-token prompt and of a cached `cached`-token prefix + `new` tokens on one
    engine, and the GPU time by kernel of one step of each."""
    original = triton_prefill.prefill_split_count
    if not split:  # before the engine is built: its CUDA graphs capture the kernel's launch
        triton_prefill.prefill_split_count = lambda *a: 1
    try:
        on_gpu = device.type == "cuda"
        model = args.model if on_gpu else "dummy:smollm2-135m"
        cached, new = (args.cached, args.new) if on_gpu or not args.smoke else (256, 16)
        built = time.perf_counter()
        engine = create_engine(EngineArgs(model=model, device=str(device), dtype=args.dtype if on_gpu else "float32",
                                          attention_backend="triton" if on_gpu else "torch", token_budget=8192,
                                          max_model_len=8192, seed=args.seed))
        build_s = time.perf_counter() - built
        gen = torch.Generator().manual_seed(args.seed)
        tokens = lambda n: torch.randint(1, 256, (n,), generator=gen).tolist()  # noqa: E731

        def ttft(prompt) -> float:
            engine.add_request(prompt, SamplingParams(max_tokens=1, ignore_eos=True))
            start = time.perf_counter()
            while engine.has_unfinished_requests():
                engine.step()
            return time.perf_counter() - start

        def case_prompts():
            prefix = tokens(cached)
            ttft(prefix)  # computes the prefix, which the cache keeps
            return prefix + tokens(new)

        repeats = 2 if args.smoke else args.repeats
        short = [ttft(tokens(new)) for _ in range(repeats + 1)][1:]
        hit = [ttft(case_prompts()) for _ in range(repeats + 1)][1:]
        parts = {"short": step_parts(engine, lambda: tokens(new), ttft, device),
                 "cached": step_parts(engine, case_prompts, ttft, device)}
        del engine  # before the cache is emptied below, so that a second engine finds the memory free
        return {"split": split, "model": model, "cached": cached, "new": new, "build_s": build_s,
                "short_ttft_s": statistics.median(short), "cached_ttft_s": statistics.median(hit),
                "ratio": statistics.median(hit) / statistics.median(short), "parts": parts}
    finally:
        triton_prefill.prefill_split_count = original
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def step_parts(engine, make_prompt, ttft, device: torch.device) -> dict:
    """One request of make_prompt() under the torch profiler: its wall time and its kernels' GPU
    time, prefill attention apart from the rest."""
    from torch.profiler import ProfilerActivity, profile

    prompt = make_prompt()
    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        wall = ttft(prompt)
    attention = other = 0.0
    for event in prof.events():
        if event.device_type.name != "CUDA":
            continue
        seconds = event.device_time / 1e6
        if "_prefill_kernel" in event.name or "_prefill_merge_kernel" in event.name:
            attention += seconds
        else:
            other += seconds
    return {"wall_s": wall, "attention_s": attention, "other_kernels_s": other,
            "host_s": max(0.0, wall - attention - other)}


def report(args, device: torch.device, kernels: list[dict], engines: list[dict]) -> str:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter: a check of the script only)"
    lines = [f"Card: {card}; {date.today()}; seed {args.seed}.", "",
             "## The prefill attention kernel alone", "",
             "| queries | cached keys | split-KV | splits | ms | rel. error vs reference |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['new']} | {r['cached']} | {r['split']} | {r['num_splits']} | {r['ms']:.4f} | {r['rel_err']:.1e} |"
              for r in kernels]
    base = {r["split"]: r["ms"] for r in kernels if r["cached"] == 0}
    for r in kernels:
        if r["cached"]:
            lines.append(f"\n{r['cached']} cached, split {r['split']}: {r['ms'] / base[r['split']]:.2f}x the kernel "
                         f"time of {r['new']} queries over {r['new']} keys.")
    lines += ["", "## TTFT on an engine, and one step of each taken apart", "",
              "| split-KV | model | new-token prompt (ms) | cached prefix + new (ms) | ratio | step part | "
              "prefill attention GPU (ms) | other kernels GPU (ms) | host (ms) | wall, profiled (ms) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in engines:
        for key, label in (("short", f"{e['new']} tokens"), ("cached", f"{e['cached']} cached + {e['new']}")):
            p = e["parts"][key]
            lines.append(f"| {'default policy' if e['split'] else 'off'} | {e['model']} | {e['short_ttft_s'] * 1e3:.2f} | "
                         f"{e['cached_ttft_s'] * 1e3:.2f} | {e['ratio']:.2f} | {label} | {p['attention_s'] * 1e3:.3f} | "
                         f"{p['other_kernels_s'] * 1e3:.3f} | {p['host_s'] * 1e3:.3f} | {p['wall_s'] * 1e3:.2f} |")
    lines += ["", f"TTFT: median of {2 if args.smoke else args.repeats} after a warm-up, one request at a time, "
              "max_tokens 1, prefix caching on. Target: ratio <= 1.2. Step parts: one request under the torch "
              "profiler (kernel times summed by name; host = wall - kernels, so it holds launch gaps too).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and few repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="dummy:llama-3-8b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--cached", type=int, default=4096, help="cached prefix tokens")
    parser.add_argument("--new", type=int, default=100, help="new tokens after the prefix, and the short prompt")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-split-engine", action="store_true", help="skip the second engine (split-KV off)")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kernels = kernel_section(args, device)
    engines = [engine_ttft(args, device, split=True)]
    print(json.dumps({k: v for k, v in engines[-1].items() if k != "parts"}), flush=True)
    if not args.no_split_engine and not args.smoke and device.type == "cuda":
        engines.append(engine_ttft(args, device, split=False))
        print(json.dumps({k: v for k, v in engines[-1].items() if k != "parts"}), flush=True)
    body = report(args, device, kernels, engines)
    print(body)
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cached_prefix_ttft.json").write_text(json.dumps(
            {"date": str(date.today()), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
             "kernel": kernels, "engine": engines}, indent=1))
        (args.out / "cached_prefix_ttft.md").write_text(
            "# Cached-prefix TTFT, taken apart\n\nProduced by `python experiments/cached_prefix_ttft.py`.\n\n" + body + "\n")
        print(f"wrote {args.out / 'cached_prefix_ttft.md'}")


if __name__ == "__main__":
    main()
