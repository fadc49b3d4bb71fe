"""What a model spec resolves to, and the one error a bad spec raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaptive_sarathi.engine.model.config import ModelConfig


class ModelLoadError(ValueError):
    """A model spec that cannot be loaded; the message names the path or value and the fix."""


@dataclass(frozen=True)
class ModelSource:
    """Everything needed to build a model and its tokenizer.

    weights_path: a Hugging Face directory with config.json and *.safetensors in HF Llama naming,
    or None when the model initializes itself randomly from dummy_seed.
    tokenizer_path: a directory with tokenizer.json and tokenizer_config.json, or None.
    """

    config: ModelConfig
    weights_path: Path | None
    tokenizer_path: Path | None
    dummy_seed: int | None
    name: str
