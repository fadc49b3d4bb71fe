"""GPU step benchmark: engine steps of a Llama-3-8B-shaped model against the card's own floors.

Sections, run in this order and printed as markdown tables as they finish:
  (a) floors: device-to-device copy bandwidth (bytes read + written) and the bf16 matmul rate
      (8192^3, random inputs rotated among three pairs);
  (b) decode-only steps, batch 1..256 x context 512..8192 where the KV cache fits, against the
      bandwidth floor (weights + KV read once): the eager forward, the forward replayed from the
      runner's CUDA graph, and the whole step as the engine runs it (inputs, replay, sampling);
  (c) prefill chunks 256..8192 tokens, tile neighbours included (512/520, ...), against the matmul
      floor (2 x params x tokens + attention FLOPs);
  (d) mixed steps (token budget 512 and 2048 holding 32..128 decodes at context 2048 plus one
      chunk) against the larger of the two floors: eager, replayed from the CUDA graph the engine
      would use (the token count padded), and the whole step;
  (e) host overhead: the real engine (CUDA graphs on) with many requests decoding; the GPU idles
      between forwards for step() host time minus the forward's CUDA-event time;
  (f) where the GPU time of a decode step (64 x 2048) and a 2048-token prefill goes: kernel
      time by kernel, from the torch profiler on the eager forward.

Steps of (b)-(d) and (f) are synthetic ScheduledBatches over scattered KV blocks holding random
values. "forward" is the CUDA-event time of the model forward and LM head on prepared inputs;
"step" is the host wall time of ModelRunner.execute (input preparation and sampling included),
synchronized. Every number is a median of --repeats runs after warm-up. The model's weights
(16 GB) pass through the 50 MB L2 every step, so no step can be served from cache.

Full mode (CUDA, dummy:llama-3-8b in bf16) takes about 2-3 minutes on an H100; --smoke runs the
same code on the CPU with dummy:tiny at tiny sizes in seconds. Results go to
gpu_step_bench[_smoke].{json,md} under --out (default $OUT, else experiments/results/), rewritten
after every section so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import random
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.kv_sizing import kv_capacity_blocks
from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.model.build import build_model
from adaptive_sarathi.engine.model_runner import ModelRunner
from adaptive_sarathi.engine.profiling.device_floors import Floor, copy_bandwidth, matmul_rate
from adaptive_sarathi.engine.profiling.kv_pool import KvPool, is_out_of_memory
from adaptive_sarathi.engine.profiling.profile_shapes import ProfileShape
from adaptive_sarathi.engine.profiling.profiler import capture_graph_for, device_name
from adaptive_sarathi.engine.profiling.step_cost import step_cost
from adaptive_sarathi.engine.profiling.step_timer import Timing, time_call
from adaptive_sarathi.engine.profiling.synthetic_batch import synthetic_batch
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.kernels.attention.backends import select_attention

BLOCK_SIZE = 16


@dataclass(frozen=True)
class Sizes:
    model: str
    device: str
    dtype: torch.dtype
    copy_bytes: int
    matmul_n: int
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    prefill_tokens: tuple[int, ...]
    mixed_budgets: tuple[int, ...]
    mixed_decodes: tuple[int, ...]
    mixed_context: int
    engine_requests: int
    engine_prompt_len: int
    engine_token_budget: int
    engine_steps: int
    warmup: int
    repeats: int


FULL = Sizes(model="dummy:llama-3-8b", device="cuda", dtype=torch.bfloat16, copy_bytes=1 << 30, matmul_n=8192,
             decode_batches=(1, 8, 32, 64, 128, 256), decode_contexts=(512, 2048, 8192),
             prefill_tokens=(256, 512, 520, 1024, 1040, 2048, 2064, 4096, 8192),
             mixed_budgets=(512, 2048), mixed_decodes=(32, 64, 128), mixed_context=2048,
             engine_requests=64, engine_prompt_len=512, engine_token_budget=2048, engine_steps=40,
             warmup=3, repeats=10)
SMOKE = Sizes(model="dummy:tiny", device="cpu", dtype=torch.float32, copy_bytes=8 << 20, matmul_n=256,
              decode_batches=(1, 4), decode_contexts=(32, 128), prefill_tokens=(16, 32, 40),
              mixed_budgets=(32,), mixed_decodes=(4, 8), mixed_context=64,
              engine_requests=8, engine_prompt_len=16, engine_token_budget=64, engine_steps=6,
              warmup=1, repeats=2)


class Report:
    """Collects each section's rows, prints its table, and rewrites the JSON and markdown files."""

    def __init__(self, out_dir: Path, stem: str, meta: dict):
        self.json_path, self.md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        out_dir.mkdir(parents=True, exist_ok=True)
        self.data: dict = {"meta": meta, "sections": {}, "errors": {}}
        self.markdown = ["# GPU step benchmark\n\n" + "\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n"]

    def section(self, key: str, title: str, headers: list[str], rows: list[list[str]], data: object,
                note: str = "") -> None:
        table = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                          + ["| " + " | ".join(r) + " |" for r in rows])
        text = f"## {title}\n\n{table}\n" + (f"\n{note}\n" if note else "")
        print("\n" + text, flush=True)
        self.markdown.append(text)
        self.data["sections"][key] = data
        self.save()

    def error(self, key: str, message: str) -> None:
        print(f"\n## {key}: FAILED\n{message}", flush=True)
        self.data["errors"][key] = message
        self.markdown.append(f"## {key}: failed\n\n```\n{message}\n```\n")
        self.save()

    def save(self) -> None:
        self.json_path.write_text(json.dumps(self.data, indent=2, default=str))
        self.md_path.write_text("\n".join(self.markdown))


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.3f}"


def pct(part: float | None, whole: float | None) -> str:
    return "n/a" if part is None or not whole else f"{100 * part / whole:.1f}%"


class StepBench:
    """One model on the device and a KV pool sized on demand; times synthetic steps."""

    def __init__(self, model, attention, sizes: Sizes, device: torch.device, seed: int):
        self.sizes, self.device = sizes, device
        param = next(model.parameters())
        self.capacity = kv_capacity_blocks(model, BLOCK_SIZE, param.device, param.dtype)
        self.pool = KvPool(model, attention, BLOCK_SIZE, self.capacity, seed)
        self.rng = random.Random(seed)
        self.config = model.config
        self.dtype_bytes = next(model.parameters()).element_size()
        self.max_context_len = max(sizes.decode_contexts)

    def fits(self, shape: ProfileShape) -> bool:
        return shape.num_blocks(BLOCK_SIZE) <= self.capacity

    def _batch(self, shape: ProfileShape):
        needed = shape.num_blocks(BLOCK_SIZE)
        runner = self.pool.runner(needed)
        batch = synthetic_batch(shape, self.pool.scattered_blocks(needed), BLOCK_SIZE, self.config.vocab_size,
                                self.rng)
        return runner, batch

    def forward(self, shape: ProfileShape) -> Timing:
        """Forward timing of `shape` on inputs already on the device."""
        runner, batch = self._batch(shape)
        return time_call(runner.prepared_forward(batch), self.device, self.sizes.warmup, self.sizes.repeats)

    def eager(self, shape: ProfileShape) -> tuple[Timing, Timing]:
        """(forward timing, whole-step timing) of `shape`."""
        forward = self.forward(shape)
        runner, batch = self._batch(shape)
        return forward, time_call(lambda: runner.execute(batch), self.device, 1, self.sizes.repeats)

    def graphed(self, shape: ProfileShape) -> tuple[Timing, Timing]:
        """(replay timing, whole-step timing) of `shape` through the CUDA graph the engine would
        replay it from (decodes of exactly its batch size, or its token count padded), the LM head
        included."""
        runner, batch = self._batch(shape)
        inputs = runner.prepare(batch)
        capture_graph_for(runner, inputs)
        try:
            assert runner.graphs_for(inputs) is not None, f"no graph replays {shape}"
            replay = time_call(lambda: runner.forward(inputs), self.device, self.sizes.warmup, self.sizes.repeats)
            return replay, time_call(lambda: runner.execute(batch), self.device, 1, self.sizes.repeats)
        finally:
            runner.graphs = runner.mixed_graphs = None

    def attempt(self, measure: Callable[[], object]) -> object | None:
        """measure(), or None when the device runs out of memory (the KV cache is then freed)."""
        try:
            return measure()
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
        # Outside the except block the error's traceback, and the activations it holds, are gone.
        self.pool.release()
        return None

    def release(self) -> None:
        self.pool.release()


def free_device_memory(device: torch.device) -> None:
    """Return memory of dropped tensors to the device, so that free-memory readings see it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def section_floors(report: Report, sizes: Sizes, device: torch.device) -> tuple[Floor, Floor]:
    copy = copy_bandwidth(device, sizes.copy_bytes)
    mm = matmul_rate(device, sizes.dtype, sizes.matmul_n)
    report.section("floors", "(a) Floors measured on this device", ["floor", "rate", "ms per op", "size"], [
        ["copy bandwidth (read + write)", f"{copy.rate / 1e9:.0f} GB/s", ms(copy.seconds), f"{copy.size >> 20} MiB"],
        [f"{str(sizes.dtype).removeprefix('torch.')} matmul", f"{mm.rate / 1e12:.1f} TFLOP/s", ms(mm.seconds),
         f"{mm.size}^3"],
    ], {"copy_bandwidth_bytes_per_s": copy.rate, "copy_seconds": copy.seconds, "copy_bytes": copy.size,
        "matmul_flops_per_s": mm.rate, "matmul_seconds": mm.seconds, "matmul_n": mm.size})
    return copy, mm


def decode_shapes(sizes: Sizes) -> list[ProfileShape]:
    return [ProfileShape(num_decodes=b, decode_context_len=c) for c in sizes.decode_contexts
            for b in sizes.decode_batches]


def section_decode(report: Report, bench: StepBench, bandwidth: float | None) -> None:
    rows, data, skipped = [], [], []
    cuda = bench.device.type == "cuda"
    for shape in decode_shapes(bench.sizes):
        if not bench.fits(shape):
            skipped.append(f"{shape.num_decodes}x{shape.decode_context_len}")
            continue
        result = bench.attempt(lambda: (bench.eager(shape), bench.graphed(shape) if cuda else (None, None)))
        if result is None:
            skipped.append(f"{shape.num_decodes}x{shape.decode_context_len} (out of memory)")
            continue
        (forward, eager_step), (replay, step) = result
        graph_s = replay.device_s if replay else None
        step_s = step.wall_s if step else eager_step.wall_s
        cost = step_cost(bench.config, shape, bench.dtype_bytes)
        floor = cost.bytes / bandwidth if bandwidth else None
        rows.append([str(shape.num_decodes), str(shape.decode_context_len), ms(forward.device_s), ms(graph_s),
                     ms(step_s), ms(floor), pct(floor, step_s), f"{step_s / floor:.2f}x" if floor else "n/a",
                     f"{cost.bytes / step_s / 1e9:.0f}"])
        data.append({"batch": shape.num_decodes, "context": shape.decode_context_len, "bytes": cost.bytes,
                     "forward_s": forward.device_s, "graph_s": graph_s, "eager_step_s": eager_step.wall_s,
                     "step_s": step_s, "floor_s": floor})
        print(f"  decode {shape.num_decodes}x{shape.decode_context_len}: eager {ms(forward.device_s)} ms, "
              f"graph {ms(graph_s)} ms, step {ms(step_s)} ms", flush=True)
    report.section("decode", "(b) Decode-only steps vs the bandwidth floor",
                   ["batch", "context", "eager forward ms", "graph forward ms", "step ms", "floor ms", "floor/step",
                    "step/floor", "GB/s"], rows, data,
                   "step = ModelRunner.execute as the engine calls it (input preparation, copies, graph replay, "
                   "sampling), host wall time, synchronized; on the CPU the eager step. "
                   f"Skipped (KV cache does not fit): {', '.join(skipped) or 'none'}.")


def section_prefill(report: Report, bench: StepBench, flop_rate: float | None) -> None:
    rows, data = [], []
    for tokens in bench.sizes.prefill_tokens:
        shape = ProfileShape(prefill_chunks=((tokens, 0),))
        result = bench.attempt(lambda: bench.eager(shape))
        if result is None:
            rows.append([str(tokens)] + ["out of memory"] * 6)
            continue
        forward, step = result
        cost = step_cost(bench.config, shape, bench.dtype_bytes)
        floor = cost.flops / flop_rate if flop_rate else None
        rows.append([str(tokens), ms(forward.device_s), ms(step.wall_s), f"{cost.flops / 1e12:.2f}", ms(floor),
                     pct(floor, forward.device_s), f"{forward.device_s / tokens * 1e6:.1f}"])
        data.append({"tokens": tokens, "flops": cost.flops, "forward_s": forward.device_s, "step_s": step.wall_s,
                     "floor_s": floor})
        print(f"  prefill {tokens}: forward {ms(forward.device_s)} ms", flush=True)
    report.section("prefill", "(c) Prefill chunks vs the matmul floor",
                   ["tokens", "forward ms", "step ms", "TFLOP", "floor ms", "floor/forward", "us/token"], rows, data,
                   "Tile steps show as a jump in forward ms between neighbours (512 -> 520, 1024 -> 1040, ...).")


def section_mixed(report: Report, bench: StepBench, bandwidth: float | None, flop_rate: float | None) -> None:
    rows, data = [], []
    s = bench.sizes
    for budget in s.mixed_budgets:
        for decodes in s.mixed_decodes:
            if decodes >= budget:
                continue
            shape = ProfileShape(num_decodes=decodes, decode_context_len=s.mixed_context,
                                 prefill_chunks=((budget - decodes, 0),))
            if not bench.fits(shape):
                continue
            cuda = bench.device.type == "cuda"
            result = bench.attempt(lambda: (bench.eager(shape), bench.graphed(shape) if cuda else (None, None)))
            if result is None:
                rows.append([str(budget), str(decodes)] + ["out of memory"] * 8)
                continue
            (forward, eager_step), (replay, step) = result
            graph_s = replay.device_s if replay else None
            step_s = step.wall_s if step else eager_step.wall_s
            cost = step_cost(bench.config, shape, bench.dtype_bytes)
            bw_floor = cost.bytes / bandwidth if bandwidth else None
            flop_floor = cost.flops / flop_rate if flop_rate else None
            floor = max(bw_floor, flop_floor) if bw_floor and flop_floor else None
            rows.append([str(budget), str(decodes), str(budget - decodes), ms(forward.device_s), ms(graph_s),
                         ms(eager_step.wall_s), ms(step_s), ms(bw_floor), ms(flop_floor),
                         f"{step_s / floor:.2f}x" if floor else "n/a"])
            data.append({"budget": budget, "decodes": decodes, "context": s.mixed_context,
                         "prefill_tokens": budget - decodes, "forward_s": forward.device_s, "graph_s": graph_s,
                         "eager_step_s": eager_step.wall_s, "step_s": step_s,
                         "bandwidth_floor_s": bw_floor, "matmul_floor_s": flop_floor})
            print(f"  mixed {budget}/{decodes}: eager {ms(forward.device_s)} ms, graph {ms(graph_s)} ms, "
                  f"step {ms(step_s)} ms", flush=True)
    report.section("mixed", f"(d) Mixed steps (decodes at context {s.mixed_context} + one chunk) vs the larger floor",
                   ["budget", "decodes", "chunk", "eager forward ms", "graph forward ms", "eager step ms", "step ms",
                    "bandwidth floor ms", "matmul floor ms", "step/floor"], rows, data,
                   "step = ModelRunner.execute as the engine runs it (from the CUDA graph on a GPU), host wall time, "
                   "synchronized; eager step = the same without graphs.")


class ForwardClock:
    """Times the device work of each step inside the engine (the eager forward, or the graph
    replay with its input copies, and the LM head) by wrapping the runner's forward: CUDA
    events on a GPU, the host clock on the CPU. `last_s()` synchronizes and returns the latest one."""

    def __init__(self, runner: ModelRunner):
        self.cuda = runner.device.type == "cuda"
        self.start: torch.cuda.Event | float | None = None
        self.end: torch.cuda.Event | float | None = None
        self.runner = runner
        runner.forward = self._timed(runner.forward)

    def _timed(self, fn):
        def timed(*args, **kwargs):
            self._mark("start")
            out = fn(*args, **kwargs)
            self._mark("end")
            return out
        return timed

    def _mark(self, which: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        else:
            event = time.perf_counter()
        setattr(self, which, event)

    def last_s(self) -> float:
        if self.cuda:
            self.end.synchronize()
            return self.start.elapsed_time(self.end) / 1e3
        return self.end - self.start

    def remove(self) -> None:
        del self.runner.forward  # the instance attribute shadowed the method


def section_engine(report: Report, sizes: Sizes, device: torch.device, seed: int):
    """Runs the engine; returns its model and attention function for section (f)."""
    s = sizes
    prefill_steps = -(-s.engine_requests * s.engine_prompt_len // s.engine_token_budget)
    skip = 3  # decode steps left untimed after the last prefill: allocator and cuBLAS warm-up
    # Decodes take part of each prefill step's budget, so prefill ends after somewhat more steps
    # than prefill_steps: the margin keeps every request decoding until the measurement ends.
    max_tokens = 2 * prefill_steps + skip + s.engine_steps + 8
    max_len = s.engine_prompt_len + max_tokens + 1
    blocks = s.engine_requests * (-(-max_len // BLOCK_SIZE) + 1)
    # The window also sizes the model's rotary table, which section (f) reuses at longer contexts.
    window = max(max_len, *s.decode_contexts) + 1
    args = EngineArgs(model=s.model, device=str(device), dtype=str(s.dtype).removeprefix("torch."),
                      token_budget=s.engine_token_budget, max_num_seqs=max(s.engine_requests, 1),
                      max_model_len=window, num_kv_blocks=blocks, seed=seed)
    engine = create_engine(args)
    runner = engine.executor.runner
    clock = ForwardClock(runner)
    stats = []
    engine.stats_listeners.append(stats.append)
    rng = random.Random(seed)
    vocab = runner.model.config.vocab_size
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    for _ in range(s.engine_requests):
        engine.add_request([rng.randrange(vocab) for _ in range(s.engine_prompt_len)], params)
    samples, decode_steps = [], 0
    for _ in range(prefill_steps + 2 * (skip + s.engine_steps)):
        count = len(stats)
        t0 = time.perf_counter()
        engine.step()
        host = time.perf_counter() - t0
        if len(stats) == count:
            continue
        st = stats[-1]
        if st.num_prefill_tokens or st.num_decode_tokens != s.engine_requests:
            continue
        decode_steps += 1
        if decode_steps > skip:
            samples.append((host, st.duration_s, clock.last_s()))
        if len(samples) == s.engine_steps:
            break
    clock.remove()
    model, attention = runner.model, runner.attention
    del engine, runner
    if not samples:
        raise RuntimeError("the engine never ran a decode-only step of every request")
    host, executor, forward = (sorted(x)[len(x) // 2] for x in zip(*samples))
    idle = host - forward
    report.section("engine", "(e) Host overhead per decode step of the real engine", [
        "requests decoding", "steps", "step() ms", "executor ms", "forward GPU ms", "GPU idle ms", "idle / step",
        "outside executor ms"], [[
            str(s.engine_requests), str(len(samples)), ms(host), ms(executor), ms(forward), ms(idle),
            pct(idle, host), ms(host - executor)]],
        {"requests": s.engine_requests, "prompt_len": s.engine_prompt_len, "token_budget": s.engine_token_budget,
         "steps": len(samples), "step_s": host, "executor_s": executor, "forward_s": forward, "idle_s": idle,
         "samples": samples},
        "Medians. GPU idle = step() host time - CUDA-event time of the step's device work (graph replay with its "
        "input copies, or the eager forward): input preparation, sampling, scheduling and output handling.")
    return model, attention


def section_kernels(report: Report, bench: StepBench) -> None:
    """Kernel time by kernel for one decode step and one prefill chunk (eager forwards)."""
    if bench.device.type != "cuda":
        report.section("kernels", "(f) GPU time by kernel", ["note"], [["skipped: needs a CUDA device"]], [])
        return
    from torch.profiler import ProfilerActivity, profile

    b, ctx = (64, 2048) if 2048 in bench.sizes.decode_contexts else (bench.sizes.decode_batches[0], 512)
    shapes = {f"decode {b}x{ctx}": ProfileShape(num_decodes=b, decode_context_len=ctx),
              "prefill 2048": ProfileShape(prefill_chunks=((2048, 0),))}
    rows, data = [], {}
    for label, shape in shapes.items():
        runner, batch = bench._batch(shape)
        forward = runner.prepared_forward(batch)
        for _ in range(bench.sizes.warmup):
            forward()
        torch.cuda.synchronize(bench.device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            forward()
            torch.cuda.synchronize(bench.device)
        totals: dict[str, float] = {}
        for event in prof.events():
            if event.device_type.name == "CUDA":
                totals[event.name] = totals.get(event.name, 0.0) + event.device_time / 1e6
        total = sum(totals.values())
        top = sorted(totals.items(), key=lambda kv: -kv[1])[:12]
        data[label] = {"total_s": total, "kernels": totals}
        rows += [[label, name[:70], ms(t), pct(t, total)] for name, t in top]
        rows.append([label, "all kernels", ms(total), "100%"])
        bench.release()
    report.section("kernels", "(f) GPU time by kernel (eager forward, torch profiler)",
                   ["step", "kernel", "ms", "share"], rows, data,
                   "Kernel busy time only; the gaps between kernels are launch overhead, which graphs remove.")


def run_section(report: Report, key: str, fn: Callable[[], object]) -> object | None:
    """fn(), or None after recording its error: one failed section must not cost the others."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - reported in the results, and the run goes on
        report.error(key, traceback.format_exc())
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, dummy:tiny, tiny sizes (for CI)")
    parser.add_argument("--device", default=None, help="override the mode's device (cuda or cpu)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median kept)")
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else experiments/results/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.device:
        sizes = dataclasses.replace(sizes, device=args.device)
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    device = torch.device(sizes.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --smoke for the CPU version")
    torch.manual_seed(args.seed)
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny CPU steps gain nothing from threads and stall when cores are busy
    out_dir = Path(args.out or os.environ.get("OUT") or Path(__file__).parent / "results")
    meta = {"card": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": sizes.model,
            "dtype": str(sizes.dtype).removeprefix("torch."), "mode": "smoke" if args.smoke else "full",
            "seed": args.seed, "warmup": sizes.warmup, "repeats": sizes.repeats, "block_size": BLOCK_SIZE}
    report = Report(out_dir, "gpu_step_bench_smoke" if args.smoke else "gpu_step_bench", meta)
    print(f"gpu_step_bench: {meta}", flush=True)
    started = time.perf_counter()

    floors = run_section(report, "floors", lambda: section_floors(report, sizes, device))
    bandwidth, flop_rate = (floors[0].rate, floors[1].rate) if floors else (None, None)

    source = resolve_model(sizes.model)
    attention = select_attention(device, "auto")
    longest = max(sizes.decode_contexts + sizes.prefill_tokens + sizes.mixed_budgets + (sizes.mixed_context,))
    model = build_model(source, device, sizes.dtype, max_positions=longest + 1)
    bench = StepBench(model, attention, sizes, device, args.seed)
    # Each section starts from an empty KV cache: the long chunks of (c) need the memory for activations.
    for key, section in (("decode", lambda: section_decode(report, bench, bandwidth)),
                         ("prefill", lambda: section_prefill(report, bench, flop_rate)),
                         ("mixed", lambda: section_mixed(report, bench, bandwidth, flop_rate))):
        run_section(report, key, section)
        bench.release()
    del bench, model
    free_device_memory(device)

    engine_out = run_section(report, "engine", lambda: section_engine(report, sizes, device, args.seed))
    if engine_out is not None:
        free_device_memory(device)
        bench = StepBench(*engine_out, sizes, device, args.seed)
        run_section(report, "kernels", lambda: section_kernels(report, bench))
        bench.release()
    print(f"\ngpu_step_bench done in {time.perf_counter() - started:.0f} s; wrote {report.json_path} and "
          f"{report.md_path}", flush=True)


if __name__ == "__main__":
    main()
