"""Build a ready LLMEngine from EngineArgs: resolve the model, size the KV cache, wire components."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from adaptive_sarathi.engine.budget import BudgetPolicy, FixedBudget
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.cuda_graph import decode_graphs_supported
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.executor import ModelExecutor
from adaptive_sarathi.engine.kv_sizing import kv_capacity_blocks
from adaptive_sarathi.engine.loaders import ModelLoadError, resolve_model
from adaptive_sarathi.engine.mixed_graphs import MAX_GRAPH_TOKENS
from adaptive_sarathi.engine.model.build import build_model
from adaptive_sarathi.engine.model_runner import ModelRunner, kv_block_bytes
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.engine.tokenizer import Tokenizer, resolve_chat_template
from adaptive_sarathi.kernels.attention.backends import select_attention

# Decode batches above this run eagerly: their kernels are long enough to hide the launches.
MAX_GRAPH_BATCH = 256
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EngineArgs:
    """Everything a user chooses about an engine. model None = the embedded SmolLM2 default;
    device/dtype "auto" = CUDA in bfloat16 when present, else CPU in float32. Steps of up to
    MAX_GRAPH_BATCH decodes (plus prefill chunks, up to MAX_GRAPH_TOKENS tokens in all) replay CUDA
    graphs on a GPU with the triton attention backend unless enforce_eager. enable_prefix_caching:
    requests reuse the KV blocks of prompt prefixes already computed (docs/prefix-caching.md).
    tokenizer: a Hugging Face tokenizer directory used instead of the model's own (vLLM's
    --tokenizer; it gives a dummy model text prompts too); chat_template: a template file's path or
    the template text, replacing the tokenizer's (vLLM's --chat-template)."""

    model: str | None = None
    scheduler: str = "sarathi"
    token_budget: int = 512
    max_chunk: int | None = None
    max_num_seqs: int = 256
    max_model_len: int | None = None
    block_size: int = 16
    num_kv_blocks: int | None = None
    cpu_kv_cache_bytes: int = 1 << 30
    gpu_memory_utilization: float = 0.90
    device: str = "auto"
    dtype: str = "auto"
    attention_backend: str = "auto"
    enforce_eager: bool = False
    seed: int = 0
    tensor_parallel_size: int = 1  # ranks (GPUs, or CPU processes over gloo) the model is split over
    num_threads: int | None = None  # torch intra-op threads of a CPU engine; None = default_num_threads()
    enable_prefix_caching: bool = True
    tokenizer: str | None = None
    chat_template: str | None = None

    def __post_init__(self) -> None:
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads={self.num_threads!r} is invalid: use an integer >= 1, or None for "
                             "the default")
        if not isinstance(self.tensor_parallel_size, int) or self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size={self.tensor_parallel_size!r} is invalid: use an integer >= 1")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is unknown: use auto, {', '.join(_DTYPES)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device={self.device!r} is unknown: use auto, cpu or cuda[:N]")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len={self.max_model_len!r} is invalid: use an integer >= 2 or None")
        # Validate scheduler and budget eagerly so a bad flag fails before the model loads.
        SchedulerConfig(name=self.scheduler, max_num_seqs=self.max_num_seqs, block_size=self.block_size,
                        enable_prefix_caching=self.enable_prefix_caching)
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size={self.block_size!r} is invalid: use a power of two >= 1")
        if self.num_kv_blocks is not None and (not isinstance(self.num_kv_blocks, int) or self.num_kv_blocks < 1):
            raise ValueError(f"num_kv_blocks={self.num_kv_blocks!r} is invalid: use an integer >= 1 or None")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization={self.gpu_memory_utilization!r} is invalid: use a fraction in (0, 1]")
        if self.cpu_kv_cache_bytes < 1:
            raise ValueError(f"cpu_kv_cache_bytes={self.cpu_kv_cache_bytes!r} is invalid: use bytes >= 1")
        FixedBudget(self.token_budget, self.max_chunk)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]


def default_num_threads(cpu_count: int | None = None) -> int:
    """Torch threads for a CPU engine when EngineArgs.num_threads is None: 1 on hosts of up to
    4 logical CPUs, else half of them, at most 4. Small models' steps are short, so extra threads
    mostly wait for each other, and on a host whose cores are busy they wait for the scheduler
    (experiments/results/cpu_threads.md)."""
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return 1 if cpus <= 4 else min(4, cpus // 2)


def create_engine(args: EngineArgs, policy: BudgetPolicy | None = None) -> LLMEngine:
    """Load the model and build the engine. On a CPU device it sets torch's process-wide thread
    count (args.num_threads, else default_num_threads()). Raises ModelLoadError for a bad model
    spec and ValueError (naming the field) for inconsistent settings."""
    source = resolve_model(args.model)
    device = args.resolved_device()
    if device.type == "cpu":
        torch.set_num_threads(args.num_threads or default_num_threads())
    dtype = args.resolved_dtype(device)
    window = min(args.max_model_len or source.config.max_position_embeddings,
                 source.config.max_position_embeddings)
    if args.tensor_parallel_size > 1:
        executor = _tensor_parallel_executor(args, source, device, dtype, window)
        num_blocks = executor.num_kv_blocks
    else:
        executor, num_blocks = _single_executor(args, source, device, dtype, window)
    scheduler = make_scheduler(SchedulerConfig(name=args.scheduler, max_num_seqs=args.max_num_seqs,
                                               max_model_len=window, block_size=args.block_size,
                                               enable_prefix_caching=args.enable_prefix_caching), num_blocks)
    # The scheduler shrinks the window so one request always fits the cache once others are preempted.
    window = scheduler.max_context_len
    tokenizer = load_tokenizer(args, source)
    # Every id the model ends a turn with (Llama 3: <|end_of_text|>, <|eom_id|>, <|eot_id|>).
    eos = source.config.eos_token_ids or (
        (tokenizer.eos_token_id,) if tokenizer and tokenizer.eos_token_id is not None else ())
    return LLMEngine(scheduler, executor, policy or FixedBudget(args.token_budget, args.max_chunk),
                     tokenizer, max_model_len=window, eos_token_ids=eos)


def load_tokenizer(args: EngineArgs, source) -> Tokenizer | None:
    """The engine's tokenizer: args.tokenizer's directory, else the model's (None for a model
    without one), with args.chat_template in place of its template. Raises ValueError naming the
    flag when the directory cannot be read, holds more token ids than the model has, or the
    template cannot be read."""
    template = resolve_chat_template(args.chat_template) if args.chat_template is not None else None
    if args.tokenizer is not None:
        path = Path(args.tokenizer).expanduser()
        try:
            tokenizer = Tokenizer.from_dir(path, chat_template=template)
        except ModelLoadError as err:
            raise ModelLoadError(f"--tokenizer {args.tokenizer}: {err}: pass a Hugging Face tokenizer directory "
                                 "(adaptive-sarathi tokenizer-path prints one)") from None
        if tokenizer.vocab_size > source.config.vocab_size:
            raise ValueError(f"--tokenizer {args.tokenizer} knows {tokenizer.vocab_size} token ids, more than the "
                             f"model's {source.config.vocab_size}: pass the tokenizer of this model")
        return tokenizer
    if source.tokenizer_path is None:
        if template is not None:
            raise ValueError("--chat-template needs a tokenizer, and this model has none: add --tokenizer DIR")
        return None
    return Tokenizer.from_dir(source.tokenizer_path, chat_template=template)


def _single_executor(args: EngineArgs, source, device: torch.device, dtype: torch.dtype,
                     window: int) -> tuple[ModelExecutor, int]:
    model = build_model(source, device, dtype, max_positions=window)
    num_blocks = _num_kv_blocks(args, model, device, dtype)
    graphs = not args.enforce_eager and decode_graphs_supported(device, args.attention_backend)
    runner = ModelRunner(model, num_blocks, args.block_size, select_attention(device, args.attention_backend),
                         seed=args.seed, decode_graphs=min(args.max_num_seqs, MAX_GRAPH_BATCH) if graphs else 0,
                         max_context_len=window, mixed_graph_tokens=MAX_GRAPH_TOKENS if graphs else 0)
    if graphs:
        runner.warm_up(window)
    return ModelExecutor(runner), num_blocks


def _tensor_parallel_executor(args: EngineArgs, source, device: torch.device, dtype: torch.dtype, window: int):
    """Spawn the workers, build every rank's slice and size the KV cache by the tightest rank.
    Raises ValueError for a size the model or host cannot take (before anything is spawned).
    Decode steps run eagerly on every rank (no CUDA graphs across ranks yet)."""
    from adaptive_sarathi.engine.distributed import check_tensor_parallel_size
    from adaptive_sarathi.engine.distributed.executor import TensorParallelExecutor
    from adaptive_sarathi.engine.distributed.session import TensorParallelSession

    check_tensor_parallel_size(source.config, args.tensor_parallel_size)
    select_attention(device, args.attention_backend)  # a bad backend fails before processes start
    session = TensorParallelSession(source, args.tensor_parallel_size, device, dtype, max_positions=window,
                                    attention_backend=args.attention_backend)
    try:
        if args.num_kv_blocks is not None:
            num_blocks = args.num_kv_blocks
        else:
            num_blocks = min(session.call("kv_capacity", args.block_size, args.gpu_memory_utilization,
                                          args.cpu_kv_cache_bytes, gather=True))
            if num_blocks < 1:
                raise ValueError("no room for a KV cache beside the model slices: raise "
                                 f"{'gpu_memory_utilization' if device.type == 'cuda' else 'cpu_kv_cache_bytes'}")
        return TensorParallelExecutor(session, num_blocks, args.block_size, seed=args.seed)
    except BaseException:
        session.shutdown()
        raise


def _num_kv_blocks(args: EngineArgs, model, device: torch.device, dtype: torch.dtype) -> int:
    if args.num_kv_blocks is not None:
        return args.num_kv_blocks
    blocks = kv_capacity_blocks(model, args.block_size, device, dtype, args.gpu_memory_utilization,
                                args.cpu_kv_cache_bytes)
    if blocks < 1:
        raise ValueError(f"no room for a KV cache ({kv_block_bytes(model, args.block_size, dtype)} bytes per "
                         f"block): raise {'gpu_memory_utilization' if device.type == 'cuda' else 'cpu_kv_cache_bytes'}")
    return blocks
