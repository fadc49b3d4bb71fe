"""A roofline latency model: a step costs the larger of its memory time and its compute time.

memory  = weight bytes + KV bytes of every attended context (+ the new tokens' KV writes),
          over HBM bandwidth x memory_efficiency;
compute = 2 x matmul params x tokens (padded up to the GPU's GEMM tile: 520 tokens cost as much
          as 640 on a 128-token tile) + the LM head on one row per sequence + attention FLOPs,
          over peak matmul rate x compute_efficiency;
step    = max(memory, compute) + overhead_s (launches, sampling, host work).

Attention FLOPs need each sequence's chunk and context, which a StepShape sums away; the model
spreads sum_context_tokens evenly over the sequences and subtracts the causal half of the mean
prefill chunk. That is exact for decode-only steps and for a single prefill chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptive_sarathi.engine.latency.hardware import GpuSpec, gpu_spec
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.loaders.dummy import DUMMY_PRESETS
from adaptive_sarathi.engine.model.config import ModelConfig


@dataclass(frozen=True)
class RooflineModel:
    """Step time of `model` on `gpu` in a dtype of `dtype_bytes` bytes per value (2 = bf16)."""

    gpu: GpuSpec
    model: ModelConfig
    dtype_bytes: int = 2
    compute_efficiency: float = 0.7  # large bf16 GEMMs reach ~70% of the datasheet peak
    memory_efficiency: float = 0.8  # streaming reads reach ~80% of the datasheet bandwidth
    overhead_s: float = 1e-3
    _linear_flops: float = field(init=False, repr=False)
    _head_flops: float = field(init=False, repr=False)
    _attn_flops: float = field(init=False, repr=False)
    _weight_s: float = field(init=False, repr=False)
    _kv_s: float = field(init=False, repr=False)
    _flop_s: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("compute_efficiency", "memory_efficiency"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name}={value!r} is invalid: use a fraction in (0, 1]")
        if self.overhead_s < 0:
            raise ValueError(f"overhead_s={self.overhead_s!r} is invalid: use seconds >= 0")
        if self.dtype_bytes not in (1, 2, 4):
            raise ValueError(f"dtype_bytes={self.dtype_bytes!r} is invalid: use 1, 2 or 4")
        m = self.model
        head = m.vocab_size * m.hidden_size
        # Every weight except the embedding lookup is a matmul operand (tied embeddings: the LM head).
        linear = m.num_params - head - (0 if m.tie_word_embeddings else head)
        bandwidth = self.gpu.memory_bandwidth * self.memory_efficiency
        values = dict(_linear_flops=2.0 * linear, _head_flops=2.0 * head,
                      _attn_flops=4.0 * m.num_layers * m.num_heads * m.head_dim,
                      _weight_s=self.weight_bytes / bandwidth, _kv_s=self.kv_bytes_per_token / bandwidth,
                      _flop_s=1.0 / (self.gpu.matmul_flops * self.compute_efficiency))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def weight_bytes(self) -> int:
        """Bytes read from HBM each step: every weight but the input embedding table (of which
        only the rows of the step's tokens are read), unless it is tied to the LM head."""
        m = self.model
        untied_embedding = 0 if m.tie_word_embeddings else m.vocab_size * m.hidden_size
        return (m.num_params - untied_embedding) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        m = self.model
        return 2 * m.num_layers * m.num_kv_heads * m.head_dim * self.dtype_bytes

    def step_time(self, shape: StepShape) -> float:
        tokens = shape.num_prefill_tokens + shape.num_decode_tokens
        if tokens == 0:
            return self.overhead_s
        seqs = shape.num_decode_tokens + shape.num_prefill_seqs
        tile = self.gpu.tile_tokens
        padded_tokens = -(-tokens // tile) * tile
        padded_seqs = -(-seqs // tile) * tile
        context = shape.sum_context_tokens
        attended = context * tokens / seqs
        if shape.num_prefill_seqs:
            attended -= shape.num_prefill_tokens * shape.num_prefill_tokens / shape.num_prefill_seqs / 2
        flops = (self._linear_flops * padded_tokens + self._head_flops * padded_seqs
                 + self._attn_flops * max(attended, tokens))
        memory_s = self._weight_s + self._kv_s * (context + tokens)
        return max(memory_s, flops * self._flop_s) + self.overhead_s

    def num_kv_blocks(self, block_size: int, gpu_memory_utilization: float = 0.9) -> int:
        """KV blocks that fit in `gpu_memory_utilization` of the GPU beside the weights. Raises
        ValueError when the weights alone do not fit."""
        free = self.gpu.memory_bytes * gpu_memory_utilization - self.weight_bytes
        blocks = int(free // (self.kv_bytes_per_token * block_size))
        if blocks < 1:
            raise ValueError(f"{self.model.name} ({self.weight_bytes / 1e9:.1f} GB of weights) leaves no room for "
                             f"a KV cache on {self.gpu.name}: pick a larger GPU or a smaller model")
        return blocks


def roofline_from_spec(spec: str, **overrides) -> RooflineModel:
    """RooflineModel for "GPU:ARCH" (e.g. "h100:llama-3-8b"; ARCH is a dummy-model preset).
    Raises ValueError naming the known GPUs or architectures."""
    gpu_name, sep, arch = spec.partition(":")
    if not sep or not arch:
        raise ValueError(f"roofline spec {spec!r} is invalid: use GPU:ARCH, e.g. h100:llama-3-8b")
    if arch not in DUMMY_PRESETS:
        raise ValueError(f"unknown architecture {arch!r} in {spec!r}: use one of {', '.join(DUMMY_PRESETS)}")
    return RooflineModel(gpu_spec(gpu_name), DUMMY_PRESETS[arch], **overrides)
