"""Tensor-parallel step benchmark: engine steps of a Llama-3-8B-shaped model split over 1..N GPUs
of this host, against each rank's own floors, with the all-reduce time of each step.

For every tensor-parallel size that splits the model (1, 2, 4, 8 up to the GPUs present):
  (a) floors, measured once on GPU 0: device-to-device copy bandwidth and the bf16 matmul rate
      (engine/profiling/device_floors.py);
  (b) decode-only steps, batch 1/32/64/128 at context 2048, against the per-rank bandwidth floor:
      the bytes one rank must read (its 1/N of the weights, its KV heads of every attended
      token) over the copy bandwidth;
  (c) prefill chunks of 512 and 2048 tokens against the per-rank matmul floor (1/N of the FLOPs);
  (d) for (b) and (c), the all-reduce time of the step measured on its own: 2 per layer + 1 for
      the embedding, back to back, on [tokens, hidden] activations in the model's dtype, on the
      same process group; shown with the roofline model's estimate (450 GB/s NVLink per direction,
      10 us per call; engine/latency/roofline.py) and as a share of the forward.

"forward" is the CUDA-event time on rank 0 of the model forward and LM head (logits gathered
over the ranks) on inputs already on each device; every rank runs the same forwards at once and
the collectives keep them in step. "step" is rank 0's host wall time of a whole engine step (plan
broadcast to the workers, input preparation, forward, sampling), synchronized. Medians of
--repeats runs after warm-up. TP=1 runs in this process with the plain model (no process group),
as the engine does; TP=N>1 spawns N-1 workers (engine/distributed). Every size runs eagerly: the
engine replays TP=1 decode steps from CUDA graphs but not yet TP>1 ones, so eager against eager is
the like-for-like comparison of the split (gpu_step_bench.py measures what graphs add at TP=1).

--profile-grid quick|full additionally writes a latency-profile CSV per size with the engine's
profiler (<gpu>_<arch>_tp<N>.csv under --profiles-dir, default <out>/profiles).

Full mode (CUDA, dummy:llama-3-8b in bf16) takes about 2 minutes on 2 H100s without profiles;
--smoke runs the same code on the CPU over gloo with dummy:tiny at TP 1 and 2 in seconds.
Results go to tp_step_bench[_smoke].{json,md} under --out (default $OUT, else
experiments/results/; --smoke without either: a temporary folder), rewritten after every TP size.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import random
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_step_bench import Report, ms, pct  # noqa: E402  (shared table/report helpers)

from adaptive_sarathi.engine.distributed import ShardSpec, valid_tensor_parallel_sizes  # noqa: E402
from adaptive_sarathi.engine.distributed.env import disable_nvlink_multicast  # noqa: E402
from adaptive_sarathi.engine.distributed.rank_state import RankState, WorkerSpec  # noqa: E402
from adaptive_sarathi.engine.distributed.session import TensorParallelSession  # noqa: E402
from adaptive_sarathi.engine.latency.hardware import GPUS, gpu_spec  # noqa: E402
from adaptive_sarathi.engine.latency.roofline import RooflineModel  # noqa: E402
from adaptive_sarathi.engine.loaders import resolve_model  # noqa: E402
from adaptive_sarathi.engine.profiling.device_floors import copy_bandwidth, matmul_rate  # noqa: E402
from adaptive_sarathi.engine.profiling.profile_shapes import ProfileShape  # noqa: E402
from adaptive_sarathi.engine.profiling.profiler import ProfileConfig, device_name, run_profile  # noqa: E402
from adaptive_sarathi.engine.profiling.step_cost import step_cost  # noqa: E402
from adaptive_sarathi.engine.profiling.step_timer import time_call  # noqa: E402
from adaptive_sarathi.engine.profiling.synthetic_batch import synthetic_batch  # noqa: E402

BLOCK_SIZE = 16


@dataclass(frozen=True)
class Sizes:
    model: str
    device: str
    dtype: torch.dtype
    copy_bytes: int
    matmul_n: int
    decode_batches: tuple[int, ...]
    decode_context: int
    prefill_tokens: tuple[int, ...]
    cpu_kv_cache_bytes: int
    warmup: int
    repeats: int


FULL = Sizes(model="dummy:llama-3-8b", device="cuda", dtype=torch.bfloat16, copy_bytes=1 << 30, matmul_n=8192,
             decode_batches=(1, 32, 64, 128), decode_context=2048, prefill_tokens=(512, 2048),
             cpu_kv_cache_bytes=1 << 30, warmup=3, repeats=10)
SMOKE = Sizes(model="dummy:tiny", device="cpu", dtype=torch.float32, copy_bytes=8 << 20, matmul_n=256,
              decode_batches=(1, 4), decode_context=64, prefill_tokens=(16, 32), cpu_kv_cache_bytes=1 << 22,
              warmup=1, repeats=2)


class LocalRank:
    """TP=1: the whole model in this process, behind the same call() as a session."""

    def __init__(self, spec: WorkerSpec):
        self.state = RankState(spec, None)

    def call(self, method: str, *args, gather: bool = False):
        result = getattr(self.state, method)(*args)
        return [result] if gather else result

    def shutdown(self) -> None:
        self.state = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def tp_sizes(sizes: Sizes, config, limit: int | None) -> tuple[list[int], list[int]]:
    """(sizes to run, sizes skipped because they do not split the model) up to the GPUs present."""
    available = torch.cuda.device_count() if sizes.device == "cuda" else 2
    top = min(available, limit) if limit else available
    valid = set(valid_tensor_parallel_sizes(config))
    return [n for n in range(1, top + 1) if n in valid], [n for n in range(1, top + 1) if n not in valid]


def start_ranks(n: int, sizes: Sizes, source, device: torch.device, max_positions: int):
    if n == 1:
        spec = WorkerSpec(source=source, size=1, device_type=device.type, first_device_index=device.index or 0,
                          dtype=sizes.dtype, max_positions=max_positions, attention_backend="auto", port=0,
                          collective_timeout_s=0, cpu_threads=torch.get_num_threads())
        return LocalRank(spec)
    return TensorParallelSession(source, n, device, sizes.dtype, max_positions=max_positions)


def measure_size(n: int, sizes: Sizes, source, device: torch.device, floors: dict, seed: int) -> dict:
    """Every decode and prefill measurement at TP=n; returns rows for the tables."""
    config = source.config
    local = ShardSpec(config, 0, n).local_config()  # rank 0's slice: what its floors count
    dtype_bytes = torch.finfo(sizes.dtype).bits // 8
    roofline = RooflineModel(gpu_spec("h100"), config, dtype_bytes=dtype_bytes, tensor_parallel_size=n)
    shapes = [ProfileShape(num_decodes=b, decode_context_len=sizes.decode_context) for b in sizes.decode_batches]
    shapes += [ProfileShape(prefill_chunks=((t, 0),)) for t in sizes.prefill_tokens]
    max_positions = max(s.max_context_len for s in shapes) + 1
    started = time.perf_counter()
    ranks = start_ranks(n, sizes, source, device, max_positions)
    out = {"tp": n, "startup_s": time.perf_counter() - started, "decode": [], "prefill": [], "skipped": []}
    try:
        capacity = min(ranks.call("kv_capacity", BLOCK_SIZE, 0.9, sizes.cpu_kv_cache_bytes, gather=True))
        fitting = [s for s in shapes if s.num_blocks(BLOCK_SIZE) <= capacity]
        out["skipped"] = [str(s) for s in shapes if s not in fitting]
        if not fitting:
            return out
        blocks = max(s.num_blocks(BLOCK_SIZE) for s in fitting)
        ranks.call("make_runner", blocks, BLOCK_SIZE, seed, True)
        rng = random.Random(seed)
        for shape in fitting:
            batch = synthetic_batch(shape, rng.sample(range(blocks), shape.num_blocks(BLOCK_SIZE)), BLOCK_SIZE,
                                    config.vocab_size, rng)
            forward = ranks.call("time_forward", batch, sizes.warmup, sizes.repeats)
            step = time_call(lambda: ranks.call("execute", batch), device, 1, sizes.repeats)
            tokens = shape.num_tokens
            reduce_s = 0.0
            if n > 1:
                reduce_s = ranks.call("time_all_reduce", tokens, roofline.num_allreduces, sizes.warmup,
                                      sizes.repeats).device_s
            cost = step_cost(local, shape, dtype_bytes)
            row = {"batch": shape.num_decodes, "context": shape.decode_context_len, "tokens": tokens,
                   "forward_s": forward.device_s, "step_s": step.wall_s, "rank_bytes": cost.bytes,
                   "rank_flops": cost.flops, "allreduce_s": reduce_s, "num_allreduces": roofline.num_allreduces,
                   "modelled_allreduce_s": roofline.num_allreduces * roofline.allreduce_s(tokens)}
            if shape.num_decodes:
                row["floor_s"] = cost.bytes / floors["copy_bandwidth_bytes_per_s"]
                out["decode"].append(row)
            else:
                row["floor_s"] = cost.flops / floors["matmul_flops_per_s"]
                out["prefill"].append(row)
            print(f"  tp={n} {'decode' if shape.num_decodes else 'prefill'} {tokens} tokens: forward "
                  f"{ms(forward.device_s)} ms, all-reduce {ms(reduce_s)} ms", flush=True)
    finally:
        ranks.shutdown()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def write_tables(report: Report, results: list[dict], preamble: list[str]) -> None:
    """(Re)write the decode and prefill tables over every size measured so far."""
    report.markdown = list(preamble)
    base = {(r["tokens"], r["context"]): r["forward_s"] for res in results if res["tp"] == 1
            for r in res["decode"] + res["prefill"]}
    decode_rows, prefill_rows = [], []
    for res in results:
        for r in res["decode"]:
            speedup = base.get((r["tokens"], r["context"]))
            decode_rows.append([str(res["tp"]), str(r["batch"]), str(r["context"]), ms(r["forward_s"]),
                                ms(r["step_s"]), f"{r['rank_bytes'] / 1e9:.2f}", ms(r["floor_s"]),
                                pct(r["floor_s"], r["forward_s"]), ms(r["allreduce_s"]),
                                pct(r["allreduce_s"], r["forward_s"]), ms(r["modelled_allreduce_s"]),
                                f"{speedup / r['forward_s']:.2f}x" if speedup else "n/a"])
        for r in res["prefill"]:
            speedup = base.get((r["tokens"], r["context"]))
            prefill_rows.append([str(res["tp"]), str(r["tokens"]), ms(r["forward_s"]), ms(r["step_s"]),
                                 f"{r['rank_flops'] / 1e12:.2f}", ms(r["floor_s"]), pct(r["floor_s"], r["forward_s"]),
                                 ms(r["allreduce_s"]), pct(r["allreduce_s"], r["forward_s"]),
                                 ms(r["modelled_allreduce_s"]),
                                 f"{speedup / r['forward_s']:.2f}x" if speedup else "n/a"])
    data = {"results": results}
    report.section("decode", "(b) Decode steps vs the per-rank bandwidth floor, with all-reduce time",
                   ["tp", "batch", "context", "forward ms", "step ms", "GB/rank", "floor ms", "floor/forward",
                    "all-reduce ms", "all-reduce/forward", "modelled all-reduce ms", "speedup vs tp1"],
                   decode_rows, data,
                   "GB/rank: bytes one rank reads (its weight slice + its KV heads). all-reduce ms: the step's "
                   "2 x layers + 1 all-reduces timed on their own; modelled: roofline estimate at 450 GB/s + 10 us/call.")
    report.section("prefill", "(c) Prefill chunks vs the per-rank matmul floor, with all-reduce time",
                   ["tp", "tokens", "forward ms", "step ms", "TFLOP/rank", "floor ms", "floor/forward",
                    "all-reduce ms", "all-reduce/forward", "modelled all-reduce ms", "speedup vs tp1"],
                   prefill_rows, data)


def write_profiles(args, sizes: Sizes, ns: list[int], out_dir: Path, report: Report) -> None:
    gpu = next((name for name in GPUS if name in device_name(torch.device(sizes.device)).lower()), sizes.device)
    arch = sizes.model.removeprefix("dummy:")
    folder = Path(args.profiles_dir) if args.profiles_dir else out_dir / "profiles"
    rows = []
    for n in ns:
        path = folder / f"{gpu}_{arch}_tp{n}.csv"
        config = ProfileConfig(model=sizes.model, device=sizes.device, dtype=str(sizes.dtype).removeprefix("torch."),
                               out=str(path), grid=args.profile_grid, cpu_kv_cache_bytes=sizes.cpu_kv_cache_bytes,
                               repeats=sizes.repeats if args.smoke else 5, tensor_parallel_size=n)
        summary = run_profile(config, progress=False)
        rows.append([str(n), str(path), str(summary.num_rows), str(len(summary.skipped)), f"{summary.elapsed_s:.0f}"])
        print(f"  profile tp={n}: {summary.num_rows} rows -> {path}", flush=True)
    report.section("profiles", "Latency profiles per TP size", ["tp", "csv", "rows", "skipped", "seconds"], rows,
                   [dict(zip(("tp", "csv", "rows", "skipped", "seconds"), r)) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU over gloo, dummy:tiny, TP 1 and 2 (for CI)")
    parser.add_argument("--max-tp", type=int, default=None, help="largest TP size (default: every GPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median kept)")
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else experiments/results/)")
    parser.add_argument("--profile-grid", default=None, choices=("quick", "full"),
                        help="also write a latency-profile CSV per TP size with this grid")
    parser.add_argument("--profiles-dir", default=None, help="where profile CSVs go (default <out>/profiles)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    disable_nvlink_multicast()
    sizes = SMOKE if args.smoke else FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    device = torch.device(sizes.device, 0) if sizes.device == "cuda" else torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --smoke for the CPU version")
    torch.manual_seed(args.seed)
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny CPU steps gain nothing from threads; the workers need the cores
    out = args.out or os.environ.get("OUT")
    if out is None and args.smoke:  # CI: keep the smoke tables out of the committed results
        out = tempfile.mkdtemp(prefix="tp_step_bench_smoke_")
    out_dir = Path(out or Path(__file__).parent / "results")
    source = resolve_model(sizes.model)
    ns, invalid = tp_sizes(sizes, source.config, args.max_tp)
    meta = {"card": device_name(device), "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
            "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "nccl": str(torch.cuda.nccl.version()) if device.type == "cuda" else "none (gloo)",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": sizes.model,
            "dtype": str(sizes.dtype).removeprefix("torch."), "mode": "smoke" if args.smoke else "full",
            "tp sizes": ", ".join(map(str, ns)) + (f" (not splitting the model: {invalid})" if invalid else ""),
            "seed": args.seed, "warmup": sizes.warmup, "repeats": sizes.repeats, "block_size": BLOCK_SIZE,
            "NVLink multicast": "off (NCCL_NVLS_ENABLE=0)"}
    report = Report(out_dir, "tp_step_bench_smoke" if args.smoke else "tp_step_bench", meta)
    report.markdown[0] = report.markdown[0].replace("# GPU step benchmark", "# Tensor-parallel step benchmark", 1)
    print(f"tp_step_bench: {meta}", flush=True)
    started = time.perf_counter()

    copy = copy_bandwidth(device, sizes.copy_bytes)
    mm = matmul_rate(device, sizes.dtype, sizes.matmul_n)
    floors = {"copy_bandwidth_bytes_per_s": copy.rate, "matmul_flops_per_s": mm.rate}
    report.section("floors", "(a) Floors measured on rank 0's device", ["floor", "rate"], [
        ["copy bandwidth (read + write)", f"{copy.rate / 1e9:.0f} GB/s"],
        [f"{meta['dtype']} matmul {mm.size}^3", f"{mm.rate / 1e12:.1f} TFLOP/s"]], floors)

    results, preamble = [], list(report.markdown)
    for n in ns:
        try:
            res = measure_size(n, sizes, source, device, floors, args.seed)
        except Exception:  # noqa: BLE001 - recorded; the other sizes still run
            report.error(f"tp{n}", traceback.format_exc())
            continue
        results.append(res)
        write_tables(report, results, preamble)
    if args.profile_grid:
        try:
            write_profiles(args, sizes, ns, out_dir, report)
        except Exception:  # noqa: BLE001
            report.error("profiles", traceback.format_exc())
    print(f"\ntp_step_bench done in {time.perf_counter() - started:.0f} s; wrote {report.json_path} and "
          f"{report.md_path}", flush=True)
    if report.data["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
