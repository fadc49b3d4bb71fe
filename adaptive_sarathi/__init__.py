"""adaptive-sarathi: an SLO-aware LLM serving engine with chunked prefills and a learned token budget."""

from typing import Any

__all__ = ["LLM", "RequestOutput", "SamplingParams"]

_EXPORTS = {
    "LLM": "adaptive_sarathi.llm",
    "RequestOutput": "adaptive_sarathi.engine.outputs",
    "SamplingParams": "adaptive_sarathi.engine.sampling_params",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing a light sub-package (the scheduler, the controller) does not load
    # torch and the model code.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adaptive_sarathi' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
