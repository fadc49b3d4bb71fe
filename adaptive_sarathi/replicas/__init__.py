"""Engine replicas on Ray Serve behind one OpenAI-compatible ingress with SLO-aware routing.

Needs the optional extra `replicas` (ray[serve]); importing this package does not import Ray.
Entry points: `serve_replicas(config)` (what `adaptive-sarathi serve --replicas N` runs) and
`ReplicaSet` (start replicas and an ingress from Python, e.g. in a test). docs/replicas.md.
"""

from typing import Any

_EXPORTS = {"ReplicaConfig": "config", "ReplicaSet": "deploy", "serve_replicas": "deploy"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adaptive_sarathi.replicas' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
