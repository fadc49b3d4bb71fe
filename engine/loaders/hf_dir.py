"""Hugging Face model directories: config.json plus *.safetensors in HF Llama tensor naming."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from adaptive_sarathi.engine.loaders.source import ModelLoadError, ModelSource
from adaptive_sarathi.engine.model.config import ModelConfig


def load_hf_dir(path: Path, name: str | None = None) -> ModelSource:
    """Describe the model stored in `path`; reads config.json only, no weights.

    Raises ModelLoadError naming the directory when config.json is missing or malformed or when
    no *.safetensors file is present.
    """
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"model directory '{path}' has no config.json: pass a Hugging Face directory with "
            "config.json and *.safetensors, or a .gguf file")
    try:
        cfg = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read '{config_file}': {err}") from err
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"'{config_file}' does not hold a JSON object")
    if not any(path.glob("*.safetensors")):
        raise ModelLoadError(
            f"model directory '{path}' has no *.safetensors file: convert its weights to safetensors "
            "(other formats such as pytorch_model.bin are not loaded)")
    name = name or path.name
    try:
        config = ModelConfig.from_hf_dict(cfg, name=name)
    except ValueError as err:
        raise ModelLoadError(f"'{config_file}': {err}") from err
    tokenizer_path = path if (path / "tokenizer.json").is_file() else None
    return ModelSource(config=config, weights_path=path, tokenizer_path=tokenizer_path,
                       dummy_seed=None, name=name)


def iter_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF tensor name, CPU tensor) for every tensor in the *.safetensors files of `path`.

    Tensors come one at a time in their stored dtype, so a caller can copy each into its model and
    drop it; the caller owns the yielded tensors. Raises ModelLoadError when there is no such file.
    """
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors file in '{path}'")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                yield key, handle.get_tensor(key)
