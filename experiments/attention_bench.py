"""Attention benchmark: the Triton paged-KV kernels against PyTorch SDPA and FlexAttention.

Shapes are Llama-3-8B attention (32 query heads, 8 KV heads, head dim 128) in bf16 with cache
blocks of 16 tokens, placed at random in the cache:
  decode   batch B in {1, 8, 32, 64, 128, 256}, every sequence with C in {512, 2048, 8192} keys;
  prefill  one chunk of N in {512, 1024, 2048, 4096} tokens after P in {0, 1024, 2048, 4096}
           cached tokens (row i sees keys 0..P+i).
Methods:
  triton   this package's kernels, reading K/V through the block tables;
  sdpa     torch scaled_dot_product_attention on K/V already gathered into contiguous tensors
           (the gather is not timed): the best a non-paged engine could do. Decode folds the 4
           query heads of a KV head into 4 query rows; prefill expands K/V to all 32 heads first;
  flex     FlexAttention, compiled, on the same contiguous K/V (GQA in the kernel); prefill with a
           block mask for the causal band after the prefix.
Numbers: median time by triton.testing.do_bench (L2 flushed before every run), which includes any
host time a call spends beyond the flush's; "graph" is the triton call replayed from a CUDA graph
(do_bench_cudagraph median), its time on the GPU alone. Decode reports K/V
bytes read / time, and that as a fraction of the card's copy bandwidth (a 1 GiB device-to-device
copy, bytes read + written / time). Prefill reports causal FLOPs (4 * heads * head_dim * visible
(query, key) pairs) / time, and that as a fraction of a bf16 8192^3 matmul's rate. Every row also
checks triton against sdpa (relative Frobenius error) and the script exits 1 when one exceeds
the dtype's tolerance.

--smoke runs tiny fp32 shapes on the CPU through Triton's interpreter (FlexAttention skipped):
its timings mean nothing, it only proves the script and the comparison run. The full mode needs
a GPU and writes its table to --out (default $OUT/attention_bench.md when $OUT is set, else
experiments/results/attention_bench.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Shapes:
    heads: int
    kv_heads: int
    head_dim: int
    block_size: int
    dtype: torch.dtype
    decode: list[tuple[int, int]]  # (batch, context)
    prefill: list[tuple[int, int]]  # (chunk tokens, cached tokens)
    tol: float  # largest relative error accepted between triton and sdpa


FULL = Shapes(32, 8, 128, 16, torch.bfloat16,
              decode=[(b, c) for b in (1, 8, 32, 64, 128, 256) for c in (512, 2048, 8192)],
              prefill=[(n, p) for n in (512, 1024, 2048, 4096) for p in (0, 1024, 2048, 4096)], tol=1e-2)
SMOKE = Shapes(4, 2, 16, 4, torch.float32, decode=[(1, 8), (2, 40)], prefill=[(8, 0), (24, 16)], tol=1e-4)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU through the Triton interpreter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-flex", action="store_true",
                        help="skip FlexAttention (its compiles take most of the time)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file for the results table")
    return parser.parse_args()


def make_timer(device: torch.device):
    """ms per call of fn: do_bench's median on a GPU, a wall-clock median of 3 on the CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=25, rep=100, return_mode="median")

    def cpu_time(fn):
        fn()
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - start) * 1e3)
        return statistics.median(runs)

    return cpu_time


def floors(device: torch.device, timer) -> tuple[float, float]:
    """(copy GB/s counting bytes read + written, bf16 matmul TFLOP/s) measured on `device`."""
    n = (1 << 30) // 2 if device.type == "cuda" else 1 << 20
    src = torch.randn(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    copy_ms = timer(lambda: dst.copy_(src))
    m = 8192 if device.type == "cuda" else 256
    a = torch.randn(m, m, dtype=torch.bfloat16, device=device)
    b = torch.randn(m, m, dtype=torch.bfloat16, device=device)
    mm_ms = timer(lambda: a @ b)
    return 2 * n * 2 / copy_ms / 1e6, 2 * m**3 / mm_ms / 1e9


def paged_step(shapes: Shapes, seqs: list[tuple[int, int]], gen: torch.Generator, device: torch.device):
    """Caches, queries and metadata of a step of seqs (cached, new); blocks placed at random.
    Returns (q, k_cache, v_cache, meta, tables)."""
    from adaptive_sarathi.kernels.attention import AttentionMetadata, PrefillSpan

    bs = shapes.block_size
    counts = [-(-(c + n) // bs) for c, n in seqs]
    num_blocks = sum(counts)
    randn = lambda *s: torch.randn(*s, generator=gen, dtype=shapes.dtype, device=device)  # noqa: E731
    k_cache = randn(num_blocks, bs, shapes.kv_heads, shapes.head_dim)
    v_cache = randn(num_blocks, bs, shapes.kv_heads, shapes.head_dim)
    perm = torch.randperm(num_blocks, generator=gen, device=device).to(torch.int32)
    tables = list(perm.split(counts))
    decodes = [i for i, (_, n) in enumerate(seqs) if n == 1]
    width = max((counts[i] for i in decodes), default=0)
    dec_tables = torch.zeros(len(decodes), width, dtype=torch.int32, device=device)
    for row, i in enumerate(decodes):
        dec_tables[row, :counts[i]] = tables[i]
    prefills, row = [], len(decodes)
    for i, (cached, new) in enumerate(seqs):
        if new > 1:
            prefills.append(PrefillSpan(row, row + new, cached, tables[i]))
            row += new
    lens = [sum(seqs[i]) for i in decodes]
    # The caches already hold every token, so slot_mapping (read only by write_kv_cache) is a placeholder.
    meta = AttentionMetadata(slot_mapping=torch.zeros(row, dtype=torch.int64, device=device),
                             num_decode_tokens=len(decodes), decode_block_tables=dec_tables,
                             decode_context_lens=torch.tensor(lens, dtype=torch.int32, device=device),
                             max_decode_context_len=max(lens, default=0), prefills=prefills, block_size=bs)
    return randn(row, shapes.heads, shapes.head_dim), k_cache, v_cache, meta, tables


def contiguous_kv(cache: torch.Tensor, table: torch.Tensor, context: int) -> torch.Tensor:
    """[kv_heads, context, head_dim] of one sequence, gathered out of the paged cache."""
    return cache[table.long()].flatten(0, 1)[:context].transpose(0, 1).contiguous()


def batched_kv(cache: torch.Tensor, tables: torch.Tensor, context: int) -> torch.Tensor:
    """[batch, kv_heads, context, head_dim] of sequences that all hold `context` keys."""
    return cache[tables.long()].flatten(1, 2)[:, :context].transpose(1, 2).contiguous()


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error; NaN (an output element left unwritten) counts as infinite."""
    if out.isnan().any():
        return float("inf")
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def graph_time(device: torch.device, fn) -> float | None:
    """ms per call of fn replayed from a CUDA graph (the GPU's time alone); None on the CPU."""
    if device.type != "cuda":
        return None
    from triton.testing import do_bench_cudagraph

    return do_bench_cudagraph(fn, rep=100, return_mode="median")


def compiled_flex():
    """(compiled flex_attention, create_block_mask), or None where FlexAttention is missing."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    # One compile per shape: lift dynamo's recompile limits so no shape falls back to eager.
    for name, limit in (("recompile_limit", 1024), ("accumulated_recompile_limit", 4096),
                        ("cache_size_limit", 1024), ("accumulated_cache_size_limit", 4096)):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, limit)
    return torch.compile(flex_attention, dynamic=False), create_block_mask


def try_time(timer, fn) -> tuple[float | None, str]:
    try:
        return timer(fn), ""
    except Exception as e:  # a baseline that cannot run this shape is reported, not fatal
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"


def bench_decode(shapes, batch, context, gen, device, timer, attention, flex):
    q, k_cache, v_cache, meta, tables = paged_step(shapes, [(context - 1, 1)] * batch, gen, device)
    scale = shapes.head_dim ** -0.5
    group = shapes.heads // shapes.kv_heads
    k = batched_kv(k_cache, meta.decode_block_tables, context)  # [B, kvh, C, D]
    v = batched_kv(v_cache, meta.decode_block_tables, context)
    q_folded = q.view(batch, shapes.kv_heads, group, shapes.head_dim)  # a KV head's query heads as rows
    times, notes = {}, []
    times["triton"], note = try_time(timer, lambda: attention(q, k_cache, v_cache, meta, scale))
    notes.append(note)
    times["sdpa"], note = try_time(timer, lambda: F.scaled_dot_product_attention(q_folded, k, v, scale=scale))
    notes.append(note)
    if flex is not None:
        flex_fn, _ = flex
        q4 = q.view(batch, shapes.heads, 1, shapes.head_dim)
        times["flex"], note = try_time(timer, lambda: flex_fn(q4, k, v, scale=scale, enable_gqa=True))
        notes.append(note)
    times["graph"] = graph_time(device, lambda: attention(q, k_cache, v_cache, meta, scale))
    err = rel_err(attention(q, k_cache, v_cache, meta, scale, out=torch.full_like(q, float("nan"))),
                  F.scaled_dot_product_attention(q_folded, k, v, scale=scale).reshape(q.shape))
    kv_bytes = 2 * batch * context * shapes.kv_heads * shapes.head_dim * shapes.dtype.itemsize
    return times, kv_bytes, err, "; ".join(n for n in notes if n)


def bench_prefill(shapes, chunk, cached, gen, device, timer, attention, flex):
    q, k_cache, v_cache, meta, tables = paged_step(shapes, [(cached, chunk)], gen, device)
    scale = shapes.head_dim ** -0.5
    group = shapes.heads // shapes.kv_heads
    ctx = cached + chunk
    k = contiguous_kv(k_cache, tables[0], ctx)[None]  # [1, kvh, ctx, D]
    v = contiguous_kv(v_cache, tables[0], ctx)[None]
    k_all, v_all = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    q4 = q.transpose(0, 1)[None].contiguous()  # [1, heads, chunk, D]
    if cached:
        from torch.nn.attention.bias import causal_lower_right

        bias = causal_lower_right(chunk, ctx)
        sdpa = lambda: F.scaled_dot_product_attention(q4, k_all, v_all, attn_mask=bias, scale=scale)  # noqa: E731
    else:
        sdpa = lambda: F.scaled_dot_product_attention(q4, k_all, v_all, is_causal=True, scale=scale)  # noqa: E731
    times, notes = {}, []
    times["triton"], note = try_time(timer, lambda: attention(q, k_cache, v_cache, meta, scale))
    notes.append(note)
    times["sdpa"], note = try_time(timer, sdpa)
    notes.append(note)
    if flex is not None:
        flex_fn, create_block_mask = flex
        mask = create_block_mask(lambda b, h, qi, ki: ki <= qi + cached, None, None, chunk, ctx, device=device)
        times["flex"], note = try_time(timer, lambda: flex_fn(q4, k, v, block_mask=mask, scale=scale,
                                                               enable_gqa=True))
        notes.append(note)
    try:
        ref = sdpa()
    except RuntimeError:  # no fused kernel for this mask here: the same function through an explicit mask
        visible = torch.arange(ctx, device=device)[None, :] <= torch.arange(chunk, device=device)[:, None] + cached
        ref = F.scaled_dot_product_attention(q4, k_all, v_all, attn_mask=visible, scale=scale)
    times["graph"] = graph_time(device, lambda: attention(q, k_cache, v_cache, meta, scale))
    err = rel_err(attention(q, k_cache, v_cache, meta, scale, out=torch.full_like(q, float("nan"))),
                  ref[0].transpose(0, 1))
    flops = 4 * shapes.heads * shapes.head_dim * (chunk * cached + chunk * (chunk + 1) // 2)
    return times, flops, err, "; ".join(n for n in notes if n)


def fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def main() -> int:
    args = parse_args()
    use_gpu = torch.cuda.is_available() and not args.smoke
    if not use_gpu:
        if not args.smoke:
            print("the full benchmark needs a CUDA GPU; use --smoke on the CPU", file=sys.stderr)
            return 2
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels (and triton) are imported
    from adaptive_sarathi.kernels.attention.triton_backend import triton_paged_attention

    device = torch.device("cuda" if use_gpu else "cpu")
    shapes = SMOKE if args.smoke else FULL
    gen = torch.Generator(device=device).manual_seed(args.seed)
    timer = make_timer(device)
    flex = None if (args.no_flex or not use_gpu) else compiled_flex()
    methods = ["triton", "sdpa"] + (["flex"] if flex is not None else [])
    copy_gbs, mm_tflops = floors(device, timer)
    card = torch.cuda.get_device_name(device) if use_gpu else "CPU (Triton interpreter; timings meaningless)"

    out_path = args.out
    if out_path is None and not args.smoke:
        out_path = (Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results") \
            / "attention_bench.md"
    import triton

    lines = [f"# Attention benchmark ({card}, {date.today()})", "",
             f"torch {torch.__version__}, triton {triton.__version__}, seed {args.seed}; heads {shapes.heads}, "
             f"kv_heads {shapes.kv_heads}, head_dim {shapes.head_dim}, block_size {shapes.block_size}, "
             f"{str(shapes.dtype).removeprefix('torch.')}.", "",
             f"Floors measured on this card: copy {copy_gbs:.4g} GB/s (read + write), "
             f"bf16 matmul {mm_tflops:.4g} TFLOP/s.", "",
             "## Decode (K/V bandwidth; % of the copy floor)", "",
             "| batch | context | KV MB | " + " | ".join(f"{m} us | {m} GB/s | {m} %" for m in methods)
             + " | triton graph us | graph % | err | notes |",
             "|" + "---|" * (6 + 3 * len(methods) + 1)]

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)
        if out_path is not None:  # rewritten after every row, so a cut-off run keeps what it measured
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text("\n".join(lines) + "\n")

    for line in lines[:-1]:
        print(line)
    emit(lines.pop())
    worst = 0.0
    for batch, context in shapes.decode:
        times, kv_bytes, err, notes = bench_decode(shapes, batch, context, gen, device, timer,
                                                   triton_paged_attention, flex)
        worst = max(worst, err)
        cells = []
        for m in methods:
            t = times.get(m)
            gbs = None if t is None else kv_bytes / t / 1e6
            cells += [fmt(None if t is None else t * 1e3), fmt(gbs, 0),
                      fmt(None if gbs is None else 100 * gbs / copy_gbs)]
        g = times["graph"]
        cells += [fmt(None if g is None else g * 1e3), fmt(None if g is None else 100 * kv_bytes / g / 1e6 / copy_gbs)]
        emit(f"| {batch} | {context} | {kv_bytes / 1e6:.1f} | " + " | ".join(cells) + f" | {err:.1e} | {notes} |")
        if use_gpu:
            torch.cuda.empty_cache()

    emit("")
    emit("## Prefill chunk after a cached prefix (causal TFLOP/s; % of the matmul floor)")
    emit("")
    emit("| chunk | cached | GFLOP | " + " | ".join(f"{m} ms | {m} TFLOP/s | {m} %" for m in methods)
         + " | triton graph ms | graph TFLOP/s | err | notes |")
    emit("|" + "---|" * (6 + 3 * len(methods) + 1))
    for chunk, cached in shapes.prefill:
        times, flops, err, notes = bench_prefill(shapes, chunk, cached, gen, device, timer,
                                                 triton_paged_attention, flex)
        worst = max(worst, err)
        cells = []
        for m in methods:
            t = times.get(m)
            tf = None if t is None else flops / t / 1e9
            cells += [fmt(t, 3), fmt(tf, 0), fmt(None if tf is None else 100 * tf / mm_tflops)]
        g = times["graph"]
        cells += [fmt(g, 3), fmt(None if g is None else flops / g / 1e9, 0)]
        emit(f"| {chunk} | {cached} | {flops / 1e9:.1f} | " + " | ".join(cells) + f" | {err:.1e} | {notes} |")
    if worst > shapes.tol:
        print(f"FAIL: triton differs from sdpa by {worst:.2e} (relative), over {shapes.tol:.0e}", file=sys.stderr)
        return 1
    print(f"all rows agree with sdpa (worst relative error {worst:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
