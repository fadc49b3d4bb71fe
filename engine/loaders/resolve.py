"""Turn a --model spec into a ModelSource: the embedded default, a GGUF file, an HF directory or a dummy."""

from __future__ import annotations

from pathlib import Path

from adaptive_sarathi.engine.loaders.default_model import DEFAULT_NAME, default_gguf_path
from adaptive_sarathi.engine.loaders.dummy import DUMMY_PREFIX, DUMMY_PRESETS, load_dummy
from adaptive_sarathi.engine.loaders.gguf_convert import convert_gguf
from adaptive_sarathi.engine.loaders.hf_dir import load_hf_dir
from adaptive_sarathi.engine.loaders.source import ModelLoadError, ModelSource


def resolve_model(spec: str | None, cache_dir: Path | None = None) -> ModelSource:
    """Resolve `spec` to a model source, converting GGUF files into `cache_dir` on first use.

    spec: None or "default" (the embedded SmolLM2-135M-Instruct), a path to a .gguf file, a path to
    a Hugging Face directory, or "dummy:<arch>". cache_dir defaults to $ADAPTIVE_SARATHI_CACHE or
    ~/.cache/adaptive_sarathi. Raises ModelLoadError naming the spec and the fix when it cannot be
    loaded.
    """
    if spec is None or spec == "default":
        return _from_gguf(default_gguf_path(), cache_dir, DEFAULT_NAME)
    if spec.startswith(DUMMY_PREFIX):
        return load_dummy(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_hf_dir(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _from_gguf(path, cache_dir, path.stem)
    reason = "is not a .gguf file or a directory" if path.exists() else "not found"
    raise ModelLoadError(
        f"model '{spec}' {reason}: pass a Hugging Face directory with config.json and *.safetensors, "
        f"a .gguf file, '{DUMMY_PREFIX}<arch>' (known: {', '.join(DUMMY_PRESETS)}) or omit --model for "
        "the embedded SmolLM2")


def _from_gguf(path: Path, cache_dir: Path | None, name: str) -> ModelSource:
    try:
        converted = convert_gguf(path, cache_dir)
    except OSError as err:
        raise ModelLoadError(f"cannot convert GGUF file '{path}': {err}") from err
    return load_hf_dir(converted, name=name)
