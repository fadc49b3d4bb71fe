"""The prefill attention kernels alone on a short chunk after a cached prefix, for
cached_prefix_ttft.py: kernel time per layer without launch overhead, variants side by side.

For `new` queries after each prefix length in `cached_list` (llama-3-8b shapes on a GPU), every
variant runs over `layers` separate paged caches (blocks at random places), one call per layer,
as the engine's 32 layers run one after another (so K/V come from HBM, not from an L2 the
previous call warmed). Times, in microseconds per layer:
  graph  a CUDA graph of the `layers` calls replayed: the GPU time alone (median of replays / layers);
  eager  CUDA events around each eager call: kernel time plus the host's launch overhead
         (on a CPU: wall time in Triton's interpreter, meaningless but proving the code runs).
Variants:
  current, exact layout      triton_prefill with its host split policy on the chunk's own layout;
  current, unsplit           the same with num_splits=1;
  current, graph layout      triton_prefill on the layout a mixed CUDA graph gives it (the chunk
                             padded to the graph size, 32 spans, the window as max_context_len):
                             what the engine runs; its host policy sees 36+ tiles and never splits;
  device split, graph layout triton_prefill_split (default tile, then a sweep of tiles and waves);
  sdpa                       torch SDPA on K/V gathered into contiguous tensors (GQA in the call,
                             causal aligned to the last key): a yardstick for the same work.
Every variant is checked against the plain-torch reference on layer 0; a variant that fails
(compile error, out of memory) is recorded with its error and the others still run.
"""

from __future__ import annotations

import statistics
import time
import traceback
from dataclasses import dataclass

import torch

from adaptive_sarathi.engine.mixed_graphs import MAX_GRAPH_PREFILLS, mixed_capture_sizes
from adaptive_sarathi.kernels.attention import triton_prefill, triton_prefill_split
from adaptive_sarathi.kernels.attention.metadata import AttentionMetadata, PrefillLayout, PrefillSpan
from adaptive_sarathi.kernels.attention.reference import paged_attention_reference
from adaptive_sarathi.kernels.attention.triton_decode import MIN_PARTITION
from adaptive_sarathi.kernels.attention.triton_prefill import PrefillConfig


@dataclass(frozen=True)
class Shapes:
    heads: int
    kv_heads: int
    head_dim: int
    block_size: int
    dtype: torch.dtype
    window: int  # the engine's context window: a graph layout's max_context_len


GPU = Shapes(32, 8, 128, 16, torch.bfloat16, 8192)
CPU = Shapes(4, 2, 16, 4, torch.float32, 256)
# Tiles swept for the device-split kernel on a GPU besides the default (block_m, block_n, warps, stages).
SWEEP = [(128, 64, 8, 3), (128, 64, 4, 2), (128, 128, 8, 2), (64, 64, 4, 3), (64, 128, 4, 2)]


@dataclass
class Case:
    """`layers` caches holding one sequence of cached + new tokens, its queries and layouts."""

    q: torch.Tensor
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    tables: list[torch.Tensor]
    exact: list[PrefillLayout]
    graph: list[PrefillLayout]
    ref: torch.Tensor  # float32 reference output of layer 0
    cached: int
    new: int


def build_case(s: Shapes, cached: int, new: int, layers: int, gen: torch.Generator, device: torch.device) -> Case:
    blocks = -(-(cached + new) // s.block_size)
    num_blocks = blocks + 64
    randn = lambda *shape: torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(s.dtype)  # noqa: E731
    q = randn(new, s.heads, s.head_dim)
    graph_rows = next(size for size in mixed_capture_sizes(8192) if size >= new)
    width = -(-s.window // s.block_size)
    caches, tables, exact, graph = [], [], [], []
    for _ in range(layers):
        caches.append((randn(num_blocks, s.block_size, s.kv_heads, s.head_dim),
                       randn(num_blocks, s.block_size, s.kv_heads, s.head_dim)))
        table = torch.randperm(num_blocks, generator=gen, device=device)[:blocks].to(torch.int32)
        tables.append(table)
        exact.append(PrefillLayout.of([PrefillSpan(0, new, cached, table)], device))
        spans = torch.zeros(3, MAX_GRAPH_PREFILLS, dtype=torch.int32, device=device)
        spans[:, 0] = torch.tensor([0, new, cached], dtype=torch.int32)
        padded = torch.zeros(MAX_GRAPH_PREFILLS, width, dtype=torch.int32, device=device)
        padded[0, :blocks] = table
        graph.append(PrefillLayout(spans, padded, num_rows=graph_rows, max_q_len=graph_rows,
                                   max_context_len=s.window))
    meta = AttentionMetadata(torch.zeros(new, dtype=torch.int64, device=device), 0,
                             torch.zeros(0, 1, dtype=torch.int32, device=device),
                             torch.zeros(0, dtype=torch.int32, device=device), 0,
                             [PrefillSpan(0, new, cached, tables[0])], s.block_size)
    k, v = caches[0]
    ref = paged_attention_reference(q.float(), k.float(), v.float(), meta, s.head_dim ** -0.5)
    return Case(q, caches, tables, exact, graph, ref, cached, new)


def gathered_sdpa(s: Shapes, case: Case):
    """A per-layer call of torch SDPA over K/V gathered into [1, kv_heads, context, D] (outside
    the timing), GQA and the lower-right causal alignment in the call; output [new, heads, D]."""
    from torch.nn.attention.bias import causal_lower_right

    ctx = case.cached + case.new
    pos = torch.arange(ctx, device=case.q.device)
    dense = []
    for (k, v), table in zip(case.caches, case.tables):
        blocks, slots = table[pos // s.block_size].long(), pos % s.block_size
        dense.append((k[blocks, slots].permute(1, 0, 2)[None].contiguous(),
                      v[blocks, slots].permute(1, 0, 2)[None].contiguous()))
    q = case.q.permute(1, 0, 2)[None].contiguous()
    mask = causal_lower_right(case.new, ctx)
    scale = s.head_dim ** -0.5
    sdpa = torch.nn.functional.scaled_dot_product_attention
    try:
        sdpa(q, *dense[0], attn_mask=mask, scale=scale, enable_gqa=True)
    except RuntimeError:  # a build whose kernels for this bias take no GQA: expand the KV heads
        group = s.heads // s.kv_heads
        dense = [(k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)) for k, v in dense]

    def layer(i: int, out: torch.Tensor) -> None:
        k, v = dense[i]
        o = sdpa(q, k, v, attn_mask=mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
        out.copy_(o[0].permute(1, 0, 2))  # a 0.8 MB copy at llama-3-8b's shapes

    return layer


def time_layers(layer, layers: int, out: torch.Tensor, device: torch.device, replays: int
                ) -> tuple[float | None, float]:
    """(graph us per layer, eager us per call) of layer(i, out) for i in range(layers); graph is
    None (and the reason printed) when the calls cannot be captured."""
    for i in range(layers):  # compiles, and the first eager pass
        layer(i, out)
    if device.type != "cuda":
        start = time.perf_counter()
        for i in range(layers):
            layer(i, out)
        wall = (time.perf_counter() - start) * 1e6 / layers
        return wall, wall
    torch.cuda.synchronize()
    eager = []
    for _ in range(max(1, replays // 4)):
        for i in range(layers):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            layer(i, out)
            end.record()
            end.synchronize()
            eager.append(start.elapsed_time(end) * 1e3)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for i in range(layers):
                layer(i, out)
    except Exception:  # noqa: BLE001 - the eager time still stands
        traceback.print_exc()
        torch.cuda.synchronize()
        return None, statistics.median(eager)
    for _ in range(3):
        graph.replay()
    replayed = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        replayed.append(start.elapsed_time(end) * 1e3 / layers)
    del graph
    return statistics.median(replayed), statistics.median(eager)


def variants(s: Shapes, case: Case, device: torch.device, sweep: bool, cpu_wave: int, min_partition: int):
    """(name, tile, splits described, layer function) of every variant for `case`."""
    scale = s.head_dim ** -0.5
    group = s.heads // s.kv_heads
    default = triton_prefill.prefill_config(s.head_dim, s.dtype)
    sms = triton_prefill._num_sms(device)

    def host_splits(layout: PrefillLayout, config: PrefillConfig) -> int:
        tiles = layout.num_rows * group // config.block_m + layout.q_lens.shape[0]
        return triton_prefill.prefill_split_count(tiles, s.kv_heads, layout.max_context_len, sms)

    def current(layouts, num_splits=None):
        def layer(i, out):
            k, v = case.caches[i]
            triton_prefill.prefill_attention(case.q, k, v, layouts[i], scale, out, num_splits=num_splits)
        return layer

    def device_split(config: PrefillConfig, wave: int):
        def layer(i, out):
            k, v = case.caches[i]
            triton_prefill_split.prefill_attention_device_split(case.q, k, v, case.graph[i], scale, out,
                                                                config=config, wave=wave,
                                                                min_partition=min_partition)
        return layer

    tile = lambda c: f"{c.block_m}x{c.block_n} w{c.num_warps} s{c.num_stages}"  # noqa: E731
    yield "current, exact layout", tile(default), f"{host_splits(case.exact[0], default)} (host)", current(case.exact)
    yield "current, unsplit", tile(default), "1", current(case.exact, 1)
    yield "current, graph layout", tile(default), f"{host_splits(case.graph[0], default)} (host)", current(case.graph)
    base_wave = triton_prefill_split.default_wave(device) if device.type == "cuda" else cpu_wave
    split_default = triton_prefill_split.device_split_config(case.graph[0], s.head_dim, s.dtype)
    configs = [split_default]
    if sweep:
        configs += [PrefillConfig(*c) for c in SWEEP if PrefillConfig(*c) != split_default]
    waves = [base_wave] + ([base_wave // 2, base_wave * 3 // 2] if sweep else [])
    for config in configs:
        for wave in (waves if config == split_default else [base_wave]):
            splits, plan = triton_prefill_split.split_plan([case.new], [case.cached], group, s.kv_heads, config, wave,
                                                           min_partition=min_partition)
            parts = sorted({p for _, _, p in plan})
            yield (f"device split, graph layout (wave {wave})", tile(config),
                   f"{splits}, parts {'/'.join(map(str, parts))} (device)", device_split(config, wave))
    yield "sdpa, gathered K/V", "-", "-", gathered_sdpa(s, case)


def kernel_rows(cached_list: list[int], new: int, layers: int, replays: int, seed: int, device: torch.device,
                sweep: bool) -> list[dict]:
    """One row per (prefix, variant): us per layer (graph and eager), error vs the reference, or
    the error that stopped it."""
    s = GPU if device.type == "cuda" else CPU
    gen = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for cached in cached_list:
        try:
            case = build_case(s, cached, new, layers, gen, device)
        except Exception as e:  # noqa: BLE001 - recorded; the other prefixes still run
            traceback.print_exc()
            rows.append({"cached": cached, "new": new, "keys": cached + new, "variant": "(building the case)",
                         "tile": "-", "splits": "-", "error": f"{type(e).__name__}: {str(e)[:200]}"})
            continue
        # On a CPU the prefixes are short: smaller partitions, so that the split path runs there too.
        for name, tile, splits, layer in variants(s, case, device, sweep, cpu_wave=8,
                                                  min_partition=MIN_PARTITION if device.type == "cuda" else 32):
            row = {"cached": cached, "new": new, "keys": cached + new, "variant": name, "tile": tile,
                   "splits": splits}
            try:
                out = torch.full_like(case.q, float("nan"))
                row["graph_us"], row["eager_us"] = time_layers(layer, layers, out, device, replays)
                layer(0, out)
                row["rel_err"] = ((out.float() - case.ref).norm() / case.ref.norm()).item()
            except Exception as e:  # noqa: BLE001 - one variant's failure is a result, not the end of the run
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                traceback.print_exc()
            rows.append(row)
            print(f"kernel: {new} after {cached}: {name} [{tile}, splits {splits}]: "
                  + (f"{row['graph_us']} us/layer (graph), {row['eager_us']:.1f} us eager, "
                     f"rel err {row['rel_err']:.1e}" if "error" not in row else row["error"]), flush=True)
        del case
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def kernel_table(rows: list[dict]) -> list[str]:
    """The rows as markdown lines, with each variant's graph time relative to the fresh prompt's
    (same variant, no prefix) where that ran."""
    fresh = {r["variant"] + r["tile"]: r.get("graph_us") for r in rows if r["cached"] == 0}
    lines = ["| queries | cached keys | variant | tile | splits | GPU us/layer (graph) | x fresh prompt | "
             "eager us/call | rel. error |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['new']} | {r['cached']} | {r['variant']} | {r['tile']} | {r['splits']} | "
                         f"failed: {r['error']} | | | |")
            continue
        base = fresh.get(r["variant"] + r["tile"])
        graph = f"{r['graph_us']:.1f}" if r["graph_us"] is not None else "not captured"
        ratio = f"{r['graph_us'] / base:.2f}" if base and r["graph_us"] is not None else "-"
        lines.append(f"| {r['new']} | {r['cached']} | {r['variant']} | {r['tile']} | {r['splits']} | "
                     f"{graph} | {ratio} | {r['eager_us']:.1f} | {r['rel_err']:.1e} |")
    return lines


def kernel_summary(rows: list[dict]) -> list[str]:
    """Per prefix: the engine's current path against the default device split, and the fastest
    device-split tile and wave of the sweep (graph times)."""
    lines = []
    timed = [r for r in rows if r.get("graph_us") is not None]
    for cached in sorted({r["cached"] for r in rows}):
        at = [r for r in timed if r["cached"] == cached]
        current = next((r for r in at if r["variant"] == "current, graph layout"), None)
        splits = [r for r in at if r["variant"].startswith("device split")]
        if current is None or not splits:
            continue
        default, best = splits[0], min(splits, key=lambda r: r["graph_us"])
        lines.append(f"- {default['new']} queries after {cached} cached: current (graph layout) "
                     f"{current['graph_us']:.1f} us/layer, device split {default['graph_us']:.1f} "
                     f"(current / device split = {current['graph_us'] / default['graph_us']:.2f}); fastest device split "
                     f"{best['graph_us']:.1f} ({best['tile']}, {best['variant'].split('(')[-1].rstrip(')')}).")
    return lines
