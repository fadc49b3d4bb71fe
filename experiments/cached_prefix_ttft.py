"""Why a cached prefix still costs TTFT: a 4k-token cached prefix + 100 new tokens against a
100-token prompt, the step taken apart (GPU, in-process, about three minutes).

prefix_caching.py --gpu measured the first at 1.76x the second (target <= 1.2x). The only work
that grows with the cached prefix is attention: the 100 new queries attend 4196 keys instead of
at most 100. This script times

  kernel  the prefill attention kernels alone at llama-3-8b's shapes (32 query heads, 8 KV heads,
          head dim 128, bf16, blocks of 16 at random places in the cache), 100 queries after
          --cached-list prefixes (0, 1k, 4k, 8k), in microseconds per layer over 32 layers'
          caches: replayed from a CUDA graph (GPU time alone) and eager (with launch overhead);
          triton_prefill on the chunk's exact layout (host split policy, and unsplit), on the
          layout a mixed CUDA graph gives it (what the engine runs), the device-split kernel of
          triton_prefill_split (default tile, then --sweep: other tiles and waves), and torch
          SDPA on gathered K/V as a yardstick (cached_prefix_kernels.py);
  engine  TTFT on a real engine (--model, default dummy:llama-3-8b, attention backend triton,
          CUDA graphs as served): the 100-token prompt and the 4k cached prefix + 100, median of
          --repeats after a warm-up, and the step's GPU time by kernel (torch profiler, one step
          of each): the prefill attention kernels, everything else, and the host time around
          them (the step's wall time less its kernel time); one engine per --engines entry:
          "current" (triton_prefill), "device_split" (DEVICE_SPLIT_MIN_CONTEXT set to
          --device-split-min-context while the engine is built and run).

Writes cached_prefix_ttft.json and cached_prefix_ttft.md to --out (default $OUT when set, else
experiments/results). A variant or an engine that fails is recorded with its error and the run
goes on. --smoke: tiny shapes, few repeats; on a machine without a GPU the kernels run in
Triton's interpreter and the engine is dummy:smollm2-135m on the CPU with the torch attention
backend, so its numbers mean nothing and only prove the script runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import traceback
from datetime import date
from pathlib import Path

import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ.setdefault("TRITON_INTERPRET", "1")

from cached_prefix_kernels import kernel_rows, kernel_summary, kernel_table  # noqa: E402

from adaptive_sarathi.engine.factory import EngineArgs, create_engine  # noqa: E402
from adaptive_sarathi.engine.sampling_params import SamplingParams  # noqa: E402
from adaptive_sarathi.kernels.attention import triton_prefill_split  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# The prefill attention kernels of both paths, as the profiler names them.
ATTENTION_KERNELS = ("_prefill_kernel", "_prefill_merge_kernel", "_device_split_kernel", "_device_merge_kernel")


def engine_ttft(args, device: torch.device, variant: str) -> dict:
    """TTFTs of a `new`-token prompt and of a cached `cached`-token prefix + `new` tokens on one
    engine whose prefill attention is `variant` ("current" or "device_split"), and the GPU time by
    kernel of one step of each."""
    original = triton_prefill_split.DEVICE_SPLIT_MIN_CONTEXT
    # Set before the engine is built: its CUDA graphs capture the kernels' launches.
    triton_prefill_split.DEVICE_SPLIT_MIN_CONTEXT = args.device_split_min_context if variant == "device_split" else None
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
        return {"variant": variant, "model": model, "cached": cached, "new": new, "build_s": build_s,
                "short_ttft_s": statistics.median(short), "cached_ttft_s": statistics.median(hit),
                "ratio": statistics.median(hit) / statistics.median(short), "parts": parts}
    finally:
        triton_prefill_split.DEVICE_SPLIT_MIN_CONTEXT = original
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
        if any(name in event.name for name in ATTENTION_KERNELS):
            attention += seconds
        else:
            other += seconds
    return {"wall_s": wall, "attention_s": attention, "other_kernels_s": other,
            "host_s": max(0.0, wall - attention - other)}


def report(args, device: torch.device, kernels: list[dict], engines: list[dict]) -> str:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter: a check of the script only)"
    lines = [f"Card: {card}; {date.today()}; seed {args.seed}.", "",
             "## The prefill attention kernels alone", "",
             f"Per layer, over {args.layers} layer caches in turn; graph = a CUDA graph of the {args.layers} calls "
             "replayed (GPU time alone, median of replays); eager = CUDA events around one call (with its launch "
             "overhead). Splits: the host policy's count, or the device's (splits per row tile, and the parts the "
             "tiles cut their shared keys into). x fresh prompt: graph time over the same variant's with no prefix.",
             ""]
    lines += kernel_table(kernels) + [""] + kernel_summary(kernels)
    lines += ["", "## TTFT on an engine, and one step of each taken apart", "",
              "| prefill attention | model | new-token prompt (ms) | cached prefix + new (ms) | ratio | step part | "
              "prefill attention GPU (ms) | other kernels GPU (ms) | host (ms) | wall, profiled (ms) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in engines:
        if "error" in e:
            lines.append(f"| {e['variant']} | failed: {e['error']} | | | | | | | | |")
            continue
        for key, label in (("short", f"{e['new']} tokens"), ("cached", f"{e['cached']} cached + {e['new']}")):
            p = e["parts"][key]
            lines.append(f"| {e['variant']} | {e['model']} | {e['short_ttft_s'] * 1e3:.2f} | "
                         f"{e['cached_ttft_s'] * 1e3:.2f} | {e['ratio']:.2f} | {label} | {p['attention_s'] * 1e3:.3f} | "
                         f"{p['other_kernels_s'] * 1e3:.3f} | {p['host_s'] * 1e3:.3f} | {p['wall_s'] * 1e3:.2f} |")
    lines += ["", f"TTFT: median of {2 if args.smoke else args.repeats} after a warm-up, one request at a time, "
              "max_tokens 1, prefix caching on. Target: ratio <= 1.2. Step parts: one request under the torch "
              "profiler (kernel times summed by name; host = wall - kernels, so it holds launch gaps too). "
              f"device_split: DEVICE_SPLIT_MIN_CONTEXT = {args.device_split_min_context}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and few repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="dummy:llama-3-8b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--cached", type=int, default=4096, help="cached prefix tokens of the engine case")
    parser.add_argument("--cached-list", default="0,1024,4096,8192",
                        help="comma-separated cached prefixes of the kernel section")
    parser.add_argument("--new", type=int, default=100, help="new tokens after the prefix, and the short prompt")
    parser.add_argument("--layers", type=int, default=32, help="separate caches the kernel section cycles through")
    parser.add_argument("--replays", type=int, default=20, help="graph replays timed per kernel variant")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                        help="sweep the device-split kernel's tiles and waves (GPU only)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--engines", default="current,device_split",
                        help="comma-separated engine variants: current, device_split; empty for none")
    parser.add_argument("--device-split-min-context", type=int, default=1024,
                        help="DEVICE_SPLIT_MIN_CONTEXT for the device_split engine")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    cached_list = [int(c) for c in args.cached_list.split(",")] if on_gpu else [0, 96]
    started = time.perf_counter()
    args.layers = args.layers if on_gpu else 1
    try:
        kernels = kernel_rows(cached_list, args.new if on_gpu else 8, args.layers, args.replays, args.seed, device,
                              sweep=args.sweep and on_gpu)
    except Exception as e:  # noqa: BLE001 - the engines still run
        traceback.print_exc()
        kernels = [{"cached": 0, "new": args.new, "keys": args.new, "variant": "(kernel section)", "tile": "-",
                    "splits": "-", "error": f"{type(e).__name__}: {str(e)[:200]}"}]
    print(f"kernel section: {time.perf_counter() - started:.0f} s", flush=True)
    engines: list[dict] = []
    write(args, device, kernels, engines)
    for variant in [v for v in args.engines.split(",") if v]:
        if variant not in ("current", "device_split"):
            parser.error(f"--engines: unknown variant {variant!r}: use current and/or device_split")
        if args.smoke and engines:
            break  # one engine proves the code path on a CPU, where both variants are the torch backend
        try:
            engines.append(engine_ttft(args, device, variant))
        except Exception as e:  # noqa: BLE001 - one engine's failure is a result, not the end of the run
            traceback.print_exc()
            engines.append({"variant": variant, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})
        print(json.dumps({k: v for k, v in engines[-1].items() if k != "parts"}), flush=True)
        print(f"engines so far: {time.perf_counter() - started:.0f} s", flush=True)
        write(args, device, kernels, engines)
    print(report(args, device, kernels, engines))


def write(args, device: torch.device, kernels: list[dict], engines: list[dict]) -> None:
    """The json and md of what has run so far into --out (not under --smoke): rewritten after each
    section, so that a run stopped by a time limit keeps its finished parts."""
    if args.smoke:
        return
    on_gpu = device.type == "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cached_prefix_ttft.json").write_text(json.dumps(
        {"date": str(date.today()), "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
         "kernel": kernels, "engine": engines}, indent=1))
    (args.out / "cached_prefix_ttft.md").write_text(
        "# Cached-prefix TTFT, taken apart\n\nProduced by `python experiments/cached_prefix_ttft.py`.\n\n"
        + report(args, device, kernels, engines) + "\n")
    print(f"wrote {args.out / 'cached_prefix_ttft.md'}", flush=True)

if __name__ == "__main__":
    main()
