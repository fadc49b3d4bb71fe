"""GGUF tensors as float32 arrays under Hugging Face Llama names."""

from __future__ import annotations

import re
from collections.abc import Iterator

import gguf
import numpy as np

from adaptive_sarathi.engine.loaders.source import ModelLoadError
from adaptive_sarathi.engine.model.config import ModelConfig

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Folded into ModelConfig.rope_scaling instead of being a weight.
_CONFIG_ONLY = {"rope_freqs.weight"}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor, None for tensors that only carry config.

    Raises ModelLoadError for a tensor a Llama-family model does not have (e.g. MoE experts).
    """
    if gguf_name in _CONFIG_ONLY:
        return None
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"
    base, _, kind = gguf_name.rpartition(".")
    if base in _GLOBAL_NAMES and kind in ("weight", "bias"):
        return f"{_GLOBAL_NAMES[base]}.{kind}"
    raise ModelLoadError(f"unexpected tensor '{gguf_name}': it is not part of a Llama-family model")


def unpermute_rows(weight: np.ndarray, num_groups: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a q_proj or k_proj weight (or bias).

    llama.cpp's converter reorders each head's rows from HF's half-split rotary layout
    [x0..x(d/2-1), y0..y(d/2-1)] to interleaved pairs [x0, y0, x1, y1, ...]; this restores the
    halves. `num_groups` is the number of heads of that projection. Returns a new array.
    """
    rows = weight.shape[0]
    half = rows // num_groups // 2
    return (weight.reshape(num_groups, half, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape).copy())


def iter_hf_tensors(reader: gguf.GGUFReader, config: ModelConfig,
                    permuted_qk: bool) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (HF name, float32 array in HF [out, in] layout) for every weight tensor in `reader`.

    Tensors are dequantized one at a time; the caller owns the yielded arrays. Raises
    ModelLoadError for unknown tensors, NotImplementedError for quantization types gguf cannot
    dequantize.
    """
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        if name is None:
            continue
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        # GGUF lists dimensions fastest-first (ne order); numpy and HF want them slowest-first.
        shape = tuple(int(n) for n in reversed(tensor.shape))
        # F32 tensors come back as views of the read-only file mapping; the caller gets its own copy.
        values = np.require(values, dtype=np.float32, requirements=["C", "W", "O"]).reshape(shape)
        if permuted_qk and ".self_attn.q_proj." in name:
            values = unpermute_rows(values, config.num_heads)
        elif permuted_qk and ".self_attn.k_proj." in name:
            values = unpermute_rows(values, config.num_kv_heads)
        yield name, values
