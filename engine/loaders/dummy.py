"""Named architectures with real shapes and no weights, for runs where weight values do not matter."""

from __future__ import annotations

import dataclasses

from adaptive_sarathi.engine.loaders.source import ModelLoadError, ModelSource
from adaptive_sarathi.engine.model.config import ModelConfig

DUMMY_PREFIX = "dummy:"

DUMMY_PRESETS: dict[str, ModelConfig] = {
    # Llama 3.1 8B: the 3.1 release added the llama3 rope scaling and the 128k context.
    "llama-3-8b": ModelConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=128000, eos_token_ids=(128001, 128008, 128009)),
    "llama-2-7b": ModelConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
        num_kv_heads=32, head_dim=128, max_position_embeddings=4096, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_ids=(2,)),
    # Mistral 7B v0.1 without its sliding window is exactly a Llama with grouped-query attention.
    "mistral-7b": ModelConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, max_position_embeddings=32768, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_ids=(2,)),
    "qwen2-7b": ModelConfig(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
        num_kv_heads=4, head_dim=128, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1000000.0, attention_bias=True, bos_token_id=151643, eos_token_ids=(151645,),
        architecture="Qwen2ForCausalLM"),
    "smollm2-135m": ModelConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
        num_kv_heads=3, head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_ids=(2,)),
    "tiny": ModelConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, max_position_embeddings=2048, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_ids=(2,)),
}


def load_dummy(spec: str, seed: int = 0) -> ModelSource:
    """The preset named by `spec` ("dummy:<arch>"), with no weights or tokenizer.

    Raises ModelLoadError listing the known architectures when <arch> is not one of them.
    """
    arch = spec[len(DUMMY_PREFIX):] if spec.startswith(DUMMY_PREFIX) else spec
    preset = DUMMY_PRESETS.get(arch)
    if preset is None:
        raise ModelLoadError(
            f"unknown dummy architecture '{arch}' in model '{spec}': known are "
            f"{', '.join(DUMMY_PRESETS)} (pass e.g. 'dummy:llama-3-8b')")
    name = DUMMY_PREFIX + arch
    return ModelSource(config=dataclasses.replace(preset, name=name), weights_path=None,
                       tokenizer_path=None, dummy_seed=seed, name=name)
