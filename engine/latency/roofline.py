"""A roofline latency model: a step costs the larger of its memory time and its compute time.

memory  = weight bytes + KV bytes of every attended context (+ the new tokens' KV writes),
          over HBM bandwidth x memory_efficiency;
compute = 2 x matmul params x tokens (padded up to the GPU's GEMM tile: 520 tokens cost as much
          as 640 on a 128-token tile) + the LM head on one row per sequence + attention FLOPs,
          over peak matmul rate x compute_efficiency;
step    = max(memory, compute) + communication + overhead_s (launches, sampling, host work).

With tensor_parallel_size N > 1 each rank reads 1/N of the weights and holds 1/N of the KV heads
(one whole head when there are fewer KV heads than ranks) and does 1/N of the FLOPs, all ranks at
once; communication, not overlapped with compute (the engine runs it in line), is one ring
all-reduce of the step's activations [tokens, hidden] per attention block and per MLP (2 per
layer) plus one for the vocab-parallel embedding, each costing
allreduce_latency_s + 2 (N - 1) / N x tokens x hidden x dtype_bytes / link_bandwidth, and the
all-gather of the float32 logits rows ((N - 1) / N x rows x vocab x 4 bytes).

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

# NVLink bandwidth per direction between two GPUs of one host, bytes/s. H100 SXM5 (and H200):
# NVLink 4, 18 links x 25 GB/s each way = 450 GB/s, the "900 GB/s" of NVIDIA's H100 datasheet
# counted in both directions. A100 SXM4: NVLink 3, 600 GB/s total = 300 each way. L40S has no
# NVLink: PCIe 4.0 x16, ~32 GB/s each way.
H100_NVLINK_BANDWIDTH = 450e9
LINK_BANDWIDTH: dict[str, float] = {"h100": H100_NVLINK_BANDWIDTH, "h200": H100_NVLINK_BANDWIDTH, "a100": 300e9,
                                    "l40s": 32e9}
# Fixed cost of one all-reduce call (kernel launch, NCCL protocol handshakes), measured between two
# NVLink-connected H100s (experiments/results/tp_step_bench.md, 2026-11-25, eager): the 65
# all-reduces of a decode step took 34-46 us each whatever the batch, and with this value the
# model gives 3.2 and 5.0 ms for the prefill steps of 512 and 2048 tokens measured at 3.0 and 5.2.
ALLREDUCE_LATENCY_S = 40e-6


@dataclass(frozen=True)
class RooflineModel:
    """Step time of `model` on `gpu` in a dtype of `dtype_bytes` bytes per value (2 = bf16)."""

    gpu: GpuSpec
    model: ModelConfig
    dtype_bytes: int = 2
    compute_efficiency: float = 0.7  # large bf16 GEMMs reach ~70% of the datasheet peak
    memory_efficiency: float = 0.8  # streaming reads reach ~80% of the datasheet bandwidth
    overhead_s: float = 1e-3
    tensor_parallel_size: int = 1
    link_bandwidth: float | None = None  # bytes/s per direction; None: LINK_BANDWIDTH of the GPU
    allreduce_latency_s: float = ALLREDUCE_LATENCY_S
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
        n = self.tensor_parallel_size
        if n > 1:
            from adaptive_sarathi.engine.distributed.sharding import check_tensor_parallel_size

            check_tensor_parallel_size(self.model, n)
            if self.link_bandwidth is None and self.gpu.name not in LINK_BANDWIDTH:
                raise ValueError(f"no link bandwidth known for {self.gpu.name}: pass link_bandwidth (bytes/s)")
        elif n != 1:
            raise ValueError(f"tensor_parallel_size={n!r} is invalid: use an integer >= 1")
        if self.link_bandwidth is not None and self.link_bandwidth <= 0:
            raise ValueError(f"link_bandwidth={self.link_bandwidth!r} is invalid: use bytes/s > 0")
        m = self.model
        head = m.vocab_size * m.hidden_size
        # Every weight except the embedding lookup is a matmul operand (tied embeddings: the LM head).
        linear = m.num_params - head - (0 if m.tie_word_embeddings else head)
        bandwidth = self.gpu.memory_bandwidth * self.memory_efficiency
        # Every rank does its 1/n share at the same time (n = 1: exactly the single-GPU model).
        values = dict(_linear_flops=2.0 * linear / n, _head_flops=2.0 * head / n,
                      _attn_flops=4.0 * m.num_layers * m.num_heads * m.head_dim / n,
                      _weight_s=self.rank_weight_bytes / bandwidth, _kv_s=self.rank_kv_bytes_per_token / bandwidth,
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

    @property
    def rank_weight_bytes(self) -> float:
        """Weight bytes one rank reads each step (all of them at tensor_parallel_size 1)."""
        return self.weight_bytes / self.tensor_parallel_size

    @property
    def rank_kv_bytes_per_token(self) -> int:
        """KV bytes per token one rank holds: its share of the KV heads, at least one head."""
        m = self.model
        heads = max(1, m.num_kv_heads // self.tensor_parallel_size)
        return 2 * m.num_layers * heads * m.head_dim * self.dtype_bytes

    @property
    def num_allreduces(self) -> int:
        """All-reduces per step: attention and MLP outputs of every layer, and the embedding."""
        return 2 * self.model.num_layers + 1 if self.tensor_parallel_size > 1 else 0

    def allreduce_s(self, tokens: int) -> float:
        """Seconds of one ring all-reduce of a [tokens, hidden] activation (0 at size 1)."""
        n = self.tensor_parallel_size
        if n == 1:
            return 0.0
        message = tokens * self.model.hidden_size * self.dtype_bytes
        return self.allreduce_latency_s + 2 * (n - 1) / n * message / self._link_bandwidth()

    def communication_s(self, tokens: int, sampled_rows: int) -> float:
        """Seconds a step of `tokens` tokens sampling `sampled_rows` rows spends communicating:
        num_allreduces all-reduces plus the all-gather of float32 logits (0 at size 1)."""
        n = self.tensor_parallel_size
        if n == 1:
            return 0.0
        gather = self.allreduce_latency_s + (n - 1) / n * sampled_rows * self.model.vocab_size * 4 / self._link_bandwidth()
        return self.num_allreduces * self.allreduce_s(tokens) + gather

    def _link_bandwidth(self) -> float:
        return self.link_bandwidth if self.link_bandwidth is not None else LINK_BANDWIDTH[self.gpu.name]

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
        step = max(memory_s, flops * self._flop_s) + self.overhead_s
        if self.tensor_parallel_size > 1:
            step += self.communication_s(tokens, seqs)
        return step

    def num_kv_blocks(self, block_size: int, gpu_memory_utilization: float = 0.9) -> int:
        """KV blocks that fit in `gpu_memory_utilization` of the GPU beside the weights (per rank:
        each rank holds its slice of the weights and of every block). Raises ValueError when the
        weights alone do not fit."""
        free = self.gpu.memory_bytes * gpu_memory_utilization - self.rank_weight_bytes
        blocks = int(free // (self.rank_kv_bytes_per_token * block_size))
        if blocks < 1:
            raise ValueError(f"{self.model.name} ({self.weight_bytes / 1e9:.1f} GB of weights) leaves no room for "
                             f"a KV cache on {self.gpu.name}: pick a larger GPU or a smaller model")
        return blocks


def roofline_from_spec(spec: str, **overrides) -> RooflineModel:
    """RooflineModel for "GPU:ARCH" (e.g. "h100:llama-3-8b"; ARCH is a dummy-model preset);
    overrides are RooflineModel fields (e.g. tensor_parallel_size=2). Raises ValueError naming the
    known GPUs or architectures."""
    gpu_name, sep, arch = spec.partition(":")
    if not sep or not arch:
        raise ValueError(f"roofline spec {spec!r} is invalid: use GPU:ARCH, e.g. h100:llama-3-8b")
    if arch not in DUMMY_PRESETS:
        raise ValueError(f"unknown architecture {arch!r} in {spec!r}: use one of {', '.join(DUMMY_PRESETS)}")
    return RooflineModel(gpu_spec(gpu_name), DUMMY_PRESETS[arch], **overrides)
