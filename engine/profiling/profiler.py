"""Measure step durations over a grid of step shapes and write the latency-profile CSV.

The CSV is the format `adaptive_sarathi.engine.latency.profile.load_profile` reads: `# key: value`
tag lines (GPU, model, dtype, versions, date, settings), then the columns
num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s followed by
extra columns the simulator ignores (device_duration_s, decode_context_len, prefix_tokens).

duration_s is what the engine's executor measures for such a step: host wall time of
ModelRunner.execute (input preparation, forward, sampling) with the device synchronized, median
of `repeats` runs after `warmup` runs. On one GPU, steps replay a CUDA graph wherever the
engine's would (decode-only steps, and steps with prefill chunks of up to MAX_GRAPH_TOKENS). With tensor_parallel_size > 1 it is the driver's (rank 0's)
wall time of the step run on every rank (the plan broadcast and the logits gather included), and
the CSV carries a `# tensor_parallel_size: N` tag. Rows are written as they are measured, so a run cut short
still leaves a usable profile.
"""

from __future__ import annotations

import csv
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from adaptive_sarathi.engine.cuda_graph import decode_graphs_supported
from adaptive_sarathi.engine.factory import MAX_GRAPH_BATCH, EngineArgs
from adaptive_sarathi.engine.input_prep import ModelInputs, prepare_inputs
from adaptive_sarathi.engine.kv_sizing import kv_capacity_blocks
from adaptive_sarathi.engine.latency.hardware import device_name
from adaptive_sarathi.engine.latency.profile import PROFILE_COLUMNS
from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.mixed_graphs import MAX_GRAPH_TOKENS, mixed_capture_sizes
from adaptive_sarathi.engine.model.build import build_model
from adaptive_sarathi.engine.model_runner import ModelRunner
from adaptive_sarathi.engine.profiling.kv_pool import KvPool, is_out_of_memory
from adaptive_sarathi.engine.profiling.profile_shapes import GRID_NAMES, ProfileShape, profile_grid
from adaptive_sarathi.engine.profiling.step_timer import Timing, time_call
from adaptive_sarathi.engine.profiling.synthetic_batch import synthetic_batch
from adaptive_sarathi.kernels.attention.backends import select_attention

EXTRA_COLUMNS = ("device_duration_s", "decode_context_len", "prefix_tokens")


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile and how. device/dtype "auto" as in EngineArgs (CUDA bf16, else CPU float32).
    Raises ValueError naming a bad field."""

    model: str = "dummy:llama-3-8b"
    device: str = "auto"
    dtype: str = "auto"
    out: str = "profile.csv"
    grid: str = "quick"
    repeats: int = 5
    warmup: int = 2
    block_size: int = 16
    attention_backend: str = "auto"
    gpu_memory_utilization: float = 0.9
    cpu_kv_cache_bytes: int = 1 << 30
    device_warmup_s: float | None = None  # seconds of steps before measuring; None: 2 on a GPU, 0 on the CPU
    seed: int = 0
    tensor_parallel_size: int = 1  # > 1: steps run on that many ranks (GPUs, or CPU processes over gloo)

    def __post_init__(self) -> None:
        if self.grid not in GRID_NAMES:
            raise ValueError(f"grid={self.grid!r} is unknown: use one of {', '.join(GRID_NAMES)}")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats={self.repeats!r} is invalid: use an integer >= 1")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup={self.warmup!r} is invalid: use an integer >= 0")
        self.engine_args()  # validates device, dtype, block size, memory utilization

    def engine_args(self) -> EngineArgs:
        return EngineArgs(model=self.model, device=self.device, dtype=self.dtype, block_size=self.block_size,
                          attention_backend=self.attention_backend,
                          gpu_memory_utilization=self.gpu_memory_utilization,
                          cpu_kv_cache_bytes=self.cpu_kv_cache_bytes, seed=self.seed,
                          tensor_parallel_size=self.tensor_parallel_size)


@dataclass
class ProfileSummary:
    """What a run produced: the CSV path, rows written, and skipped shapes with the reason."""

    path: Path
    num_rows: int = 0
    skipped: list[tuple[ProfileShape, str]] = field(default_factory=list)
    elapsed_s: float = 0.0


def run_profile(config: ProfileConfig, shapes: Sequence[ProfileShape] | None = None,
                progress: bool = True) -> ProfileSummary:
    """Load the model, time every shape (config.grid's unless `shapes` is given) and write the CSV
    to config.out, overwriting it. Shapes whose context exceeds the model's window or whose KV
    cache exceeds what the engine could allocate are skipped, as are shapes that run out of device
    memory; the summary lists them. Raises ModelLoadError for a bad model spec and ValueError for
    a bad setting or when no shape fits the window."""
    started = time.perf_counter()
    args = config.engine_args()
    device = args.resolved_device()
    dtype = args.resolved_dtype(device)
    attention = select_attention(device, config.attention_backend)  # a bad name fails before the model loads
    source = resolve_model(config.model)
    summary = ProfileSummary(path=Path(config.out))
    window = source.config.max_position_embeddings
    todo = []
    for shape in (profile_grid(config.grid) if shapes is None else shapes):
        if shape.max_context_len <= window:
            todo.append(shape)
        else:
            summary.skipped.append((shape, f"context beyond the model's {window} positions"))
    if not todo:
        raise ValueError(f"no shape fits the model's {window}-token context window: profile shorter shapes")
    max_positions = max(s.max_context_len for s in todo)
    session = None
    if config.tensor_parallel_size > 1:
        session, capacity = _start_session(config, source, device, dtype, max_positions)
    else:
        model = build_model(source, device, dtype, max_positions=max_positions)
        capacity = kv_capacity_blocks(model, config.block_size, device, dtype, config.gpu_memory_utilization,
                                      config.cpu_kv_cache_bytes)
    fitting = []
    for shape in todo:
        if shape.num_blocks(config.block_size) <= capacity:
            fitting.append(shape)
        else:
            summary.skipped.append(
                (shape, f"KV cache beyond the {capacity * config.block_size} tokens the engine could hold"))
    # Increasing KV need: the cache grows a few times, and long chunks run while it is small.
    fitting.sort(key=lambda s: (s.num_blocks(config.block_size), s.num_tokens))
    if session is not None:
        from adaptive_sarathi.engine.profiling.tp_kv_pool import TensorParallelKvPool

        pool = TensorParallelKvPool(session, config.block_size, capacity, seed=config.seed)
    else:
        pool = KvPool(model, attention, config.block_size, capacity, seed=config.seed)
    tags = profile_tags(config, source.name, device, dtype, attention, capacity * config.block_size)
    tags["skipped"] = f"{len(summary.skipped)} shapes beyond the model's window or the KV capacity"
    try:
        _sweep(pool, fitting, config, tags, device, summary, progress)
    finally:
        pool.release()
        if session is not None:
            session.shutdown()
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _start_session(config: ProfileConfig, source, device: torch.device, dtype: torch.dtype, max_positions: int):
    """A tensor-parallel session over config.tensor_parallel_size ranks and the KV blocks the
    tightest rank could hold. A step's duration is then the driver's wall time of the whole
    collective step (plan broadcast, forward with all-reduces, logits gather, sampling)."""
    from adaptive_sarathi.engine.distributed import check_tensor_parallel_size
    from adaptive_sarathi.engine.distributed.session import TensorParallelSession

    check_tensor_parallel_size(source.config, config.tensor_parallel_size)
    session = TensorParallelSession(source, config.tensor_parallel_size, device, dtype, max_positions=max_positions,
                                    attention_backend=config.attention_backend)
    try:
        capacity = min(session.call("kv_capacity", config.block_size, config.gpu_memory_utilization,
                                    config.cpu_kv_cache_bytes, gather=True))
    except BaseException:
        session.shutdown()
        raise
    return session, capacity


def _sweep(pool: KvPool, shapes: list[ProfileShape], config: ProfileConfig, tags: dict[str, str],
           device: torch.device, summary: ProfileSummary, progress: bool) -> None:
    """Time `shapes` in order, appending each row to the CSV as soon as it is measured."""
    rng = random.Random(config.seed)
    summary.path.parent.mkdir(parents=True, exist_ok=True)
    # Redrawing often fills captured logs when stderr is not a terminal.
    bar = tqdm(total=len(shapes), desc="profile", file=sys.stderr, disable=not progress,
               mininterval=0.5 if sys.stderr.isatty() else 15.0)
    with summary.path.open("w", newline="") as f:
        for key, value in tags.items():
            f.write(f"# {key}: {value}\n")
        writer = csv.writer(f)
        writer.writerow(PROFILE_COLUMNS + EXTRA_COLUMNS)
        f.flush()
        warmup_s = config.device_warmup_s if config.device_warmup_s is not None else (
            2.0 if device.type == "cuda" else 0.0)
        if shapes:
            _warm_device(pool, shapes[0], warmup_s, config, rng, device)
        for shape in shapes:
            timing = _measure(pool, shape, config, rng, device)
            if timing is None:
                summary.skipped.append((shape, "out of device memory"))
            else:
                writer.writerow(_row(shape, timing))
                f.flush()
                summary.num_rows += 1
                bar.set_postfix_str(f"{shape.num_tokens} tok: {timing.wall_s * 1e3:.1f} ms")
            bar.update()
    bar.close()


def _warm_device(pool: KvPool, shape: ProfileShape, seconds: float, config: ProfileConfig, rng: random.Random,
                 device: torch.device) -> None:
    """Run steps of `shape` for `seconds` before the first measurement: an idle GPU starts at low
    clocks, and the first calls create library handles and workspaces."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _time_shape(pool, shape, shape.num_blocks(config.block_size), config, rng, device)


def _measure(pool: KvPool, shape: ProfileShape, config: ProfileConfig, rng: random.Random,
             device: torch.device) -> Timing | None:
    """The shape's timing; None when it does not fit in device memory even with the KV cache cut
    down to just what it needs."""
    needed = shape.num_blocks(config.block_size)
    for attempt in range(2):
        try:
            return _time_shape(pool, shape, needed, config, rng, device)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
        # Outside the except block the error's traceback, and the activations it holds, are gone.
        if attempt == 0 and pool.num_blocks > needed:
            pool.resize(needed)  # a cache grown for earlier shapes may be what leaves too little room
        else:
            pool.release()
    return None


def _time_shape(pool: KvPool, shape: ProfileShape, needed: int, config: ProfileConfig, rng: random.Random,
                device: torch.device) -> Timing:
    runner = pool.runner(needed)
    batch = synthetic_batch(shape, pool.scattered_blocks(needed), config.block_size, runner.model.config.vocab_size,
                            rng)
    if isinstance(runner, ModelRunner) and decode_graphs_supported(runner.device, config.attention_backend):
        capture_graph_for(runner, prepare_inputs(batch, config.block_size))
    return time_call(lambda: runner.execute(batch), device, config.warmup, config.repeats)


def capture_graph_for(runner: ModelRunner, inputs: ModelInputs) -> None:
    """Capture the one graph the engine would replay this step from (single GPU, triton
    attention): decodes of exactly its batch size, or its token count padded as the engine pads
    it. Over the model's whole position table; kept while the next step needs the same graph
    (captures take a second; the warm-up loop would repeat them)."""
    window = runner.model.rope.cos.shape[0]
    tokens = inputs.num_tokens
    if not inputs.attention.prefills:  # decode-only, as the kernels see it (1-token chunks attend as decodes)
        if tokens <= MAX_GRAPH_BATCH and (runner.graphs is None or runner.graphs.sizes != [tokens]):
            runner.capture_decode_graphs([tokens], window)
        return
    sizes = [s for s in mixed_capture_sizes(MAX_GRAPH_TOKENS) if s >= tokens]
    if sizes and (runner.mixed_graphs is None or runner.mixed_graphs.sizes != sizes[:1]):
        runner.capture_mixed_graphs(sizes[:1], MAX_GRAPH_BATCH, window)


def _row(shape: ProfileShape, timing: Timing) -> tuple:
    s = shape.step_shape()
    return (s.num_prefill_tokens, s.num_decode_tokens, s.num_prefill_seqs, s.sum_context_tokens,
            f"{timing.wall_s:.6e}", f"{timing.device_s:.6e}", shape.decode_context_len if shape.num_decodes else 0,
            shape.prefix_tokens)


def profile_tags(config: ProfileConfig, model_name: str, device: torch.device, dtype: torch.dtype,
                 attention: object, kv_capacity_tokens: int) -> dict[str, str]:
    """Provenance lines of a profile: which card, model, software and settings produced it."""
    return {
        "gpu": device_name(device),
        "model": model_name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": torch.version.cuda or "none",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "attention": f"{config.attention_backend} -> {getattr(attention, '__qualname__', type(attention).__name__)}",
        "block_size": str(config.block_size),
        "grid": config.grid,
        "kv_capacity_tokens": str(kv_capacity_tokens),
        "tensor_parallel_size": str(config.tensor_parallel_size),
        "statistic": (f"median of {config.repeats} runs after {config.warmup} warm-up runs; duration_s = host wall "
                      "time of ModelRunner.execute (prep + forward + sampling, device synchronized); "
                      "device_duration_s = CUDA-event time of the same runs"),
    }


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "none"
    return triton.__version__
