"""Fused elementwise ops benchmark: the Triton kernels of kernels/fused against plain torch.

Ops, at Llama-3-8B sizes (hidden 4096, 32 heads, 8 KV heads, head_dim 128, intermediate 14336,
bf16, KV blocks of 16 tokens placed at random) for T in {64, 2048, 8192} tokens per step:
  rms_norm            x [T, H] -> out
  fused_add_rms_norm  residual += x; out = rms_norm(residual)
  silu_and_mul        gate_up [T, 2I] -> [T, I]
  rope_and_write_kv   rotate q in place, rotate k and store k, v in the paged caches
Methods:
  triton     kernels/fused, one launch per op;
  reference  kernels/fused/reference.py, the kernels' exact semantics in plain torch;
  engine     the unfused torch ops engine/model/llama.py ran before these kernels (RMSNorm in
             torch ops, `h = residual + x` then RMSNorm, F.silu(gate) * up, rotary embedding in
             q's dtype plus write_kv_cache).
Numbers: the median of 20 timed runs after 5 warm-ups, each timed by CUDA events on an L2 just
flushed (a 256 MiB write before the run, outside the events), so every op reads from HBM. "MB" is
what the op must move at the least (each input read once, each output written once; the norm
weight and the cos/sin rows counted once per use); GB/s is that over the time, and % is that
as a fraction of the card's copy bandwidth (a 1 GiB device-to-device copy, read + write bytes).
The same bytes are used for every method, so the rate is an effective one: the torch paths move
more. Every row checks triton against reference (relative Frobenius error of each output) and
the script exits 1 when one exceeds the dtype's tolerance.

--smoke runs tiny fp32 shapes on the CPU: reference and engine in torch, and triton through
Triton's interpreter when triton is installed; its timings mean nothing, it proves the script
and the checks run. The full mode needs a GPU and writes fused_ops_bench.md and .json under --out
(default $OUT when set, else experiments/results/); --smoke writes only when --out is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch


@dataclass(frozen=True)
class Shapes:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    block_size: int
    dtype: torch.dtype
    tokens: tuple[int, ...]
    tol: float  # largest relative Frobenius error accepted between triton and reference


FULL = Shapes(4096, 32, 8, 128, 14336, 16, torch.bfloat16, (64, 2048, 8192), tol=1e-2)
SMOKE = Shapes(64, 4, 2, 16, 96, 4, torch.float32, (3, 17), tol=1e-5)
EPS = 1e-5
WARMUP, REPEATS = 5, 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for fused_ops_bench.md and .json")
    return parser.parse_args()


def make_timer(device: torch.device):
    """Seconds per call of fn: median of REPEATS CUDA-event timings, each after an L2 flush; on the
    CPU a wall-clock median of 3."""
    if device.type != "cuda":
        def cpu_time(fn) -> float:
            fn()
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t0)
            return statistics.median(runs)
        return cpu_time

    flush = torch.empty(256 << 20, dtype=torch.uint8, device=device)

    def cuda_time(fn) -> float:
        for _ in range(WARMUP):
            fn()
        pairs = []
        for _ in range(REPEATS):
            flush.zero_()  # evicts the op's operands from L2 (50 MB on an H100)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) for s, e in pairs) / 1e3

    return cuda_time


def copy_floor(device: torch.device, timer) -> float:
    """Device copy bandwidth in GB/s, bytes read + written."""
    n = 1 << 30 if device.type == "cuda" else 1 << 22
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    return 2 * n / timer(lambda: dst.copy_(src)) / 1e9


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.isnan().any():
        return float("inf")
    return ((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30)).item()


def engine_rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """RMSNorm as unfused torch ops (the model's code before kernels/fused)."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)
    return weight * xf.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def model_config(s: Shapes, max_positions: int):
    from adaptive_sarathi.engine.model.config import ModelConfig

    return ModelConfig(vocab_size=128, hidden_size=s.hidden, intermediate_size=s.intermediate, num_layers=1,
                       num_heads=s.heads, num_kv_heads=s.kv_heads, head_dim=s.head_dim,
                       max_position_embeddings=max_positions, rope_theta=500000.0)


@dataclass
class Case:
    """One op at one T: its callables per method and a check of triton against reference."""

    op: str
    tokens: int
    bytes: int
    methods: dict
    check: object  # () -> worst relative error of triton vs reference


def norm_cases(s: Shapes, t: int, gen, device, fused) -> list[Case]:
    randn = lambda *shape: torch.randn(*shape, generator=gen, device=device).to(s.dtype)  # noqa: E731
    x, residual, weight = randn(t, s.hidden), randn(t, s.hidden), randn(s.hidden) * 0.1 + 1
    e = s.dtype.itemsize
    norm_bytes = (2 * t * s.hidden + s.hidden) * e
    add_bytes = (4 * t * s.hidden + s.hidden) * e

    def check_norm() -> float:
        return rel_err(fused.rms_norm(x, weight, EPS, impl="triton"), fused.rms_norm(x, weight, EPS, impl="torch"))

    def check_add() -> float:
        r1, r2 = residual.clone(), residual.clone()
        out1 = fused.fused_add_rms_norm(x, r1, weight, EPS, impl="triton")
        out2 = fused.fused_add_rms_norm(x, r2, weight, EPS, impl="torch")
        return max(rel_err(out1, out2), rel_err(r1, r2))

    def engine_add():
        h = residual + x  # the engine's residual stream makes a new tensor per add
        return engine_rms_norm(h, weight)

    return [
        Case("rms_norm", t, norm_bytes, {
            "triton": lambda: fused.rms_norm(x, weight, EPS, impl="triton"),
            "reference": lambda: fused.rms_norm(x, weight, EPS, impl="torch"),
            "engine": lambda: engine_rms_norm(x, weight)}, check_norm),
        Case("fused_add_rms_norm", t, add_bytes, {
            "triton": lambda: fused.fused_add_rms_norm(x, residual, weight, EPS, impl="triton"),
            "reference": lambda: fused.fused_add_rms_norm(x, residual, weight, EPS, impl="torch"),
            "engine": engine_add}, check_add),
    ]


def silu_case(s: Shapes, t: int, gen, device, fused) -> Case:
    gate_up = torch.randn(t, 2 * s.intermediate, generator=gen, device=device).to(s.dtype)
    nbytes = 3 * t * s.intermediate * s.dtype.itemsize

    def engine():
        gate, up = gate_up.split(s.intermediate, dim=-1)
        return torch.nn.functional.silu(gate) * up

    def check() -> float:
        return rel_err(fused.silu_and_mul(gate_up, impl="triton"), fused.silu_and_mul(gate_up, impl="torch"))

    return Case("silu_and_mul", t, nbytes, {
        "triton": lambda: fused.silu_and_mul(gate_up, impl="triton"),
        "reference": lambda: fused.silu_and_mul(gate_up, impl="torch"),
        "engine": engine}, check)


def rope_case(s: Shapes, t: int, gen, device, fused) -> Case:
    from adaptive_sarathi.engine.model.rope import RotaryEmbedding
    from adaptive_sarathi.kernels.attention import write_kv_cache

    max_positions = 8192
    rope = RotaryEmbedding(model_config(s, max_positions), max_positions).to(device)
    q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
    qkv = torch.randn(t, q_size + 2 * kv_size, generator=gen, device=device).to(s.dtype)

    def views(buf):
        q, k, v = buf.split([q_size, kv_size, kv_size], dim=-1)
        return q.view(t, s.heads, s.head_dim), k.view(t, s.kv_heads, s.head_dim), v.view(t, s.kv_heads, s.head_dim)

    q, k, v = views(qkv)
    positions = torch.randint(0, max_positions, (t,), generator=gen, device=device)
    # Whole blocks in random order, tokens consecutive inside a block, as a sequence's slots are.
    num_blocks = -(-t // s.block_size) + 4
    blocks = torch.randperm(num_blocks, generator=gen, device=device)
    token = torch.arange(t, device=device)
    slots = blocks[token // s.block_size] * s.block_size + token % s.block_size
    cache_shape = (num_blocks, s.block_size, s.kv_heads, s.head_dim)
    k_cache = torch.zeros(cache_shape, dtype=s.dtype, device=device)
    v_cache = torch.zeros(cache_shape, dtype=s.dtype, device=device)
    e = s.dtype.itemsize
    nbytes = (2 * t * q_size + 2 * t * kv_size + 2 * t * kv_size) * e + 2 * t * s.head_dim * 4 + 2 * t * 8

    def run(impl: str, buf=qkv, kc=k_cache, vc=v_cache):
        bq, bk, bv = views(buf)
        return fused.rope_and_write_kv(bq, bk, bv, positions, rope.cos, rope.sin, kc, vc, slots, impl=impl)

    def engine():
        c, sn = rope.cos[positions].to(q.dtype)[:, None, :], rope.sin[positions].to(q.dtype)[:, None, :]
        q_rot, k_rot = q * c + rotate_half(q) * sn, k * c + rotate_half(k) * sn
        write_kv_cache(k_rot, v, k_cache, v_cache, slots)
        return q_rot

    def check() -> float:
        results = []
        for impl in ("triton", "torch"):
            buf, kc, vc = qkv.clone(), torch.zeros_like(k_cache), torch.zeros_like(v_cache)
            run(impl, buf, kc, vc)
            results.append((buf, kc, vc))
        (b1, k1, v1), (b2, k2, v2) = results
        return max(rel_err(b1, b2), rel_err(k1, k2), rel_err(v1, v2))

    return Case("rope_and_write_kv", t, nbytes, {
        "triton": lambda: run("triton"), "reference": lambda: run("torch"), "engine": engine}, check)


def main() -> int:
    args = parse_args()
    use_gpu = torch.cuda.is_available() and not args.smoke
    if not use_gpu and not args.smoke:
        print("the full benchmark needs a CUDA GPU; use --smoke on the CPU", file=sys.stderr)
        return 2
    has_triton = importlib.util.find_spec("triton") is not None
    if not use_gpu and has_triton:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernels (and triton) are imported
    import adaptive_sarathi.kernels.fused as fused

    device = torch.device("cuda" if use_gpu else "cpu")
    shapes = FULL if use_gpu else SMOKE
    methods = (["triton"] if has_triton else []) + ["reference", "engine"]
    gen = torch.Generator(device=device).manual_seed(args.seed)
    timer = make_timer(device)
    copy_gbs = copy_floor(device, timer)
    card = torch.cuda.get_device_name(device) if use_gpu else "CPU (smoke; timings meaningless)"
    out_dir = args.out
    if out_dir is None and not args.smoke:
        out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"

    rows, worst = [], 0.0
    header = ("| op | T | MB | " + " | ".join(f"{m} us | {m} GB/s | {m} %" for m in methods)
              + " | triton speedup vs engine | err |")
    table = [header, "|" + "---|" * (3 + 3 * len(methods) + 2)]
    print(f"copy floor {copy_gbs:.4g} GB/s on {card}")
    print(table[0])
    for t in shapes.tokens:
        cases = norm_cases(shapes, t, gen, device, fused) + [silu_case(shapes, t, gen, device, fused),
                                                             rope_case(shapes, t, gen, device, fused)]
        for case in cases:
            err = case.check() if has_triton else 0.0
            worst = max(worst, err)
            times = {m: timer(case.methods[m]) for m in methods}
            row = {"op": case.op, "tokens": t, "bytes": case.bytes, "rel_err": err, "methods": {}}
            cells = []
            for m in methods:
                gbs = case.bytes / times[m] / 1e9
                row["methods"][m] = {"seconds": times[m], "gb_per_s": gbs, "pct_copy": 100 * gbs / copy_gbs}
                cells += [f"{times[m] * 1e6:.1f}", f"{gbs:.0f}", f"{100 * gbs / copy_gbs:.1f}"]
            speedup = f"{times['engine'] / times['triton']:.2f}x" if "triton" in times else "n/a"
            rows.append(row)
            table.append(f"| {case.op} | {t} | {case.bytes / 1e6:.2f} | " + " | ".join(cells)
                         + f" | {speedup} | {err:.1e} |")
            print(table[-1], flush=True)
        if use_gpu:
            torch.cuda.empty_cache()

    if out_dir is not None:
        write_results(out_dir, card, shapes, args.seed, copy_gbs, table, rows)
    if worst > shapes.tol:
        print(f"FAIL: triton differs from the reference by {worst:.2e} (relative), over {shapes.tol:.0e}",
              file=sys.stderr)
        return 1
    print(f"fused ops: triton agrees with the reference (worst relative error {worst:.1e})" if has_triton
          else "fused ops: triton not installed, reference and engine timed only")
    return 0


def write_results(out_dir: Path, card: str, shapes: Shapes, seed: int, copy_gbs: float, table, rows) -> None:
    try:
        from triton import __version__ as triton_version
    except ImportError:
        triton_version = "not installed"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {"card": card, "date": stamp, "torch": torch.__version__, "triton": triton_version, "seed": seed,
            "copy_gb_per_s": copy_gbs, "warmup": WARMUP, "repeats": REPEATS,
            "shapes": {k: (str(v).removeprefix("torch.") if k == "dtype" else v) for k, v in asdict(shapes).items()}}
    lines = [f"# Fused elementwise ops ({card}, {stamp})", "",
             f"torch {torch.__version__}, triton {triton_version}, seed {seed}; hidden {shapes.hidden}, heads "
             f"{shapes.heads}, kv_heads {shapes.kv_heads}, head_dim {shapes.head_dim}, intermediate "
             f"{shapes.intermediate}, block_size {shapes.block_size}, {meta['shapes']['dtype']}.", "",
             f"Copy floor measured on this card: {copy_gbs:.4g} GB/s (read + write). Times: median of {REPEATS} "
             f"CUDA-event runs after {WARMUP} warm-ups, L2 flushed before each. MB: least bytes the op moves; "
             f"GB/s and % of the copy floor are those bytes over each method's time.", ""] + table
    (out_dir / "fused_ops_bench.md").write_text("\n".join(lines) + "\n")
    (out_dir / "fused_ops_bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
