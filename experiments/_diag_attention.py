import sys, time, statistics
sys.path.insert(0, "experiments")
import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph
import attention_bench as ab
from adaptive_sarathi.kernels.attention.triton_backend import triton_paged_attention
from adaptive_sarathi.kernels.attention import triton_decode as td
from adaptive_sarathi.kernels.attention.triton_decode import decode_attention, DecodeConfig
from adaptive_sarathi.kernels.attention.triton_prefill import prefill_attention, PrefillConfig

dev = torch.device("cuda")
gen = torch.Generator(device=dev).manual_seed(0)
S = ab.FULL
scale = 128 ** -0.5

def host_us(fn, n=200):
    for _ in range(10): fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n): fn()
    h = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return h

print("== decode host/graph/bench us")
for b, c in [(1, 512), (1, 2048), (8, 512), (8, 8192), (64, 8192)]:
    q, kc, vc, meta, _ = ab.paged_step(S, [(c - 1, 1)] * b, gen, dev)
    fn = lambda: triton_paged_attention(q, kc, vc, meta, scale)
    out = torch.empty_like(q)
    m = meta
    part = td.split_partition(b, 8, c, 64, 132)
    launch = lambda: decode_attention(q, kc, vc, m.decode_block_tables, m.decode_context_lens, c, scale, out, partition=part)
    nosplit = lambda: decode_attention(q, kc, vc, m.decode_block_tables, m.decode_context_lens, c, scale, out, partition=triton.cdiv(c, 64) * 64)
    print(b, c, "part", part, "host", round(host_us(fn), 1), "host_decode_only", round(host_us(launch), 1), "host_nosplit", round(host_us(nosplit), 1),
          "graph", round(do_bench_cudagraph(fn, return_mode="median") * 1e3, 1), "bench", round(do_bench(fn, return_mode="median") * 1e3, 1),
          "graph_nosplit", round(do_bench_cudagraph(nosplit, return_mode="median") * 1e3, 1), flush=True)
    for p in (256, 512, 1024, 2048):
        if p < c:
            f2 = lambda: decode_attention(q, kc, vc, m.decode_block_tables, m.decode_context_lens, c, scale, out, partition=p)
            print("   partition", p, "graph", round(do_bench_cudagraph(f2, return_mode="median") * 1e3, 1), flush=True)

print("== decode config sweep (graph us)")
for b, c in [(64, 8192), (256, 2048), (8, 8192)]:
    q, kc, vc, meta, _ = ab.paged_step(S, [(c - 1, 1)] * b, gen, dev)
    m = meta; out = torch.empty_like(q)
    kv = 2 * b * c * 8 * 128 * 2
    for bn, w, st in [(64, 4, 3), (64, 4, 2), (64, 4, 4), (128, 4, 3), (128, 8, 3), (32, 4, 3), (64, 8, 3), (32, 2, 4)]:
        cfg = DecodeConfig(bn, w, st)
        part = td.split_partition(b, 8, c, bn, 132)
        f = lambda: decode_attention(q, kc, vc, m.decode_block_tables, m.decode_context_lens, c, scale, out, partition=part, config=cfg)
        t = do_bench_cudagraph(f, return_mode="median")
        print(b, c, (bn, w, st), round(t * 1e3, 1), "us", round(kv / t / 1e6), "GB/s", flush=True)
    del q, kc, vc, meta

print("== prefill config sweep (ms, TFLOP/s)")
for n, p in [(2048, 2048), (2048, 0), (4096, 0), (512, 1024), (4096, 4096)]:
    q, kc, vc, meta, _ = ab.paged_step(S, [(p, n)], gen, dev)
    layout = meta.prefill_layout; out = torch.empty_like(q)
    flops = 4 * 32 * 128 * (n * p + n * (n + 1) // 2)
    for bm, bn, w, st in [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4), (128, 64, 8, 2), (128, 32, 8, 3), (64, 64, 4, 3), (128, 64, 4, 3), (256, 64, 8, 3), (128, 128, 8, 2)]:
        cfg = PrefillConfig(bm, bn, w, st)
        f = lambda: prefill_attention(q, kc, vc, layout, scale, out, config=cfg)
        try:
            t = do_bench_cudagraph(f, return_mode="median")
            print(n, p, (bm, bn, w, st), round(t, 3), "ms", round(flops / t / 1e9), "TFLOP/s", flush=True)
        except Exception as e:
            print(n, p, (bm, bn, w, st), "fail", type(e).__name__, str(e)[:100], flush=True)
