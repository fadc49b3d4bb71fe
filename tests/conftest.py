"""Suite-wide settings: GPU tests skip themselves where no CUDA device exists.

torch is imported here only when a gpu-marked test is still selected after `-m` deselection, so a
run of the torch-free tests (scheduler, controller, workloads) never pays for importing it.
"""

import pytest


def _cuda_available() -> bool:
    import torch  # deferred: only a run that selected a gpu test gets here

    return torch.cuda.is_available()


@pytest.hookimpl(trylast=True)  # after `-m` has deselected: `-m "not gpu"` leaves no gpu item to look at
def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)
