"""A ModelConfig from a GGUF file's metadata (llama.cpp key names)."""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np

from adaptive_sarathi.engine.loaders.source import ModelLoadError
from adaptive_sarathi.engine.model.config import ModelConfig

# GGUF architecture -> (HF architecture, whether llama.cpp permuted the Q/K rows).
SUPPORTED_ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("LlamaForCausalLM", True),
    "qwen2": ("Qwen2ForCausalLM", False),
}

_MISSING = object()


def gguf_field(reader: gguf.GGUFReader, key: str, default: Any = _MISSING) -> Any:
    """The value of metadata `key` (a list for arrays); `default` when absent, else KeyError."""
    field = reader.get_field(key)
    if field is None:
        if default is _MISSING:
            raise KeyError(key)
        return default
    return field.contents()


def gguf_architecture(reader: gguf.GGUFReader) -> str:
    """general.architecture; raises ModelLoadError when it is not a supported Llama-family one."""
    arch = gguf_field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"unsupported architecture '{arch}': GGUF files of {', '.join(SUPPORTED_ARCHITECTURES)} "
            "models are supported")
    return arch


def config_from_gguf(reader: gguf.GGUFReader, name: str) -> ModelConfig:
    """Shapes, rope settings and special token ids of the model in `reader`.

    Raises ModelLoadError for unsupported architectures or rope variants, KeyError for a missing
    required key.
    """
    arch = gguf_architecture(reader)
    hf_arch, _ = SUPPORTED_ARCHITECTURES[arch]
    tensors = {t.name: t for t in reader.tensors}

    def meta(key: str, default: Any = _MISSING) -> Any:
        return gguf_field(reader, f"{arch}.{key}", default)

    hidden = int(meta("embedding_length"))
    num_heads = int(meta("attention.head_count"))
    head_dim = int(meta("attention.key_length", hidden // num_heads))
    rotary_dim = int(meta("rope.dimension_count", head_dim))
    if rotary_dim != head_dim:
        raise ModelLoadError(f"partial rotary embeddings (rope over {rotary_dim} of {head_dim} dims) are unsupported")
    rope_theta = _f32(meta("rope.freq_base", 10000.0))
    rope_freqs = tensors.get("rope_freqs.weight")
    if rope_freqs is not None:
        rope_scaling = _llama3_scaling(reader, arch, np.asarray(rope_freqs.data, dtype=np.float64),
                                       rope_theta, head_dim)
    else:
        rope_scaling = _metadata_scaling(reader, arch)
    eos_ids: list[int] = []
    for key in ("eos_token_id", "eot_token_id", "eom_token_id"):
        token_id = gguf_field(reader, f"tokenizer.ggml.{key}", None)
        if token_id is not None and int(token_id) not in eos_ids:
            eos_ids.append(int(token_id))
    bos = gguf_field(reader, "tokenizer.ggml.bos_token_id", None)
    # ne order is (hidden, vocab): the embedding's second dimension is the vocabulary the weights have.
    vocab_size = int(tensors["token_embd.weight"].shape[1])
    return ModelConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=int(meta("feed_forward_length")),
        num_layers=int(meta("block_count")),
        num_heads=num_heads,
        num_kv_heads=int(meta("attention.head_count_kv", num_heads)),
        head_dim=head_dim,
        max_position_embeddings=int(meta("context_length", 4096)),
        rms_norm_eps=_f32(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias="blk.0.attn_q.bias" in tensors,
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=tuple(eos_ids),
        architecture=hf_arch,
        name=name,
    )


def _f32(value: float) -> float:
    # GGUF stores these as float32; the shortest float32 repr gives back the written 1e-05, not 9.99e-06.
    return float(str(np.float32(value)))


def _metadata_scaling(reader: gguf.GGUFReader, arch: str) -> dict[str, Any] | None:
    kind = gguf_field(reader, f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return None
    factor = _f32(gguf_field(reader, f"{arch}.rope.scaling.factor"))
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        original = int(gguf_field(reader, f"{arch}.rope.scaling.original_context_length"))
        return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    raise ModelLoadError(f"unsupported rope scaling '{kind}': linear and yarn are supported")


def _llama3_scaling(reader: gguf.GGUFReader, arch: str, freq_factors: np.ndarray, theta: float,
                    head_dim: int) -> dict[str, Any]:
    """Recover Llama 3.1's rope_scaling from the per-frequency divisors llama.cpp stores instead.

    llama.cpp keeps only the resulting divisors (rope_freqs.weight). The factor is their maximum,
    the other parameters are Meta's published values (the original context from metadata when
    present); they are accepted only if they reproduce the stored divisors.
    """
    factor = _f32(freq_factors.max())
    original = int(gguf_field(reader, f"{arch}.rope.scaling.original_context_length", 8192))
    low, high = 1.0, 4.0
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / inv_freq
    smooth = np.clip((original / wavelen - low) / (high - low), 0.0, 1.0)
    expected = 1.0 / ((1.0 - smooth) / factor + smooth)
    if expected.shape != freq_factors.shape or not np.allclose(expected, freq_factors, rtol=1e-3):
        raise ModelLoadError("unsupported rope_freqs.weight: it does not match Llama 3 rope scaling")
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": original}
