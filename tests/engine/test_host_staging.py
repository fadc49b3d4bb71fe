"""PinnedStaging: a step's tensors reach the GPU intact in one copy, and a later move does not
disturb what kernels of the previous step read."""

import pytest
import torch


@pytest.mark.gpu
def test_moves_keep_values_dtypes_and_shapes_across_reuse_and_growth():
    from adaptive_sarathi.engine.host_staging import PinnedStaging

    device = torch.device("cuda")
    staging = PinnedStaging(device)
    gen = torch.Generator().manual_seed(0)
    for size in (3, 1000, 50_000, 7):  # the third outgrows the first buffers
        if size == 3:  # the first move in inference mode (as the engine's steps), later ones outside it
            with torch.inference_mode():
                staging.move([torch.arange(size)])
        tensors = [torch.randint(0, 1 << 30, (size,), generator=gen),
                   torch.randint(0, 1 << 20, (size % 5 + 1, 3), generator=gen, dtype=torch.int32),
                   torch.empty(0, dtype=torch.int64),
                   torch.randint(0, 100, (2, size), generator=gen, dtype=torch.int32)]
        moved = staging.move(tensors)
        for a, b in zip(moved, tensors):
            assert a.device.type == "cuda" and a.dtype == b.dtype and torch.equal(a.cpu(), b)
        # A kernel queued now reads the buffer; the next move's copy into it must wait its turn.
        total = moved[0].sum()
        staging.move([torch.zeros(size, dtype=torch.int64)])
        assert total.item() == tensors[0].sum().item()
