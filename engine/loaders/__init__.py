"""Model loaders: resolve a --model spec to a config, HF-named weights and a tokenizer directory."""

from adaptive_sarathi.engine.loaders.dummy import DUMMY_PRESETS
from adaptive_sarathi.engine.loaders.gguf_convert import default_cache_dir
from adaptive_sarathi.engine.loaders.hf_dir import iter_safetensors
from adaptive_sarathi.engine.loaders.resolve import resolve_model
from adaptive_sarathi.engine.loaders.source import ModelLoadError, ModelSource

__all__ = ["DUMMY_PRESETS", "ModelLoadError", "ModelSource", "default_cache_dir", "iter_safetensors",
           "resolve_model"]
