"""A CPU engine sets torch's thread count once at build: the chosen count, else the default rule."""

import pytest
import torch

from adaptive_sarathi.engine.factory import EngineArgs, create_engine, default_num_threads


@pytest.mark.parametrize("cpus, expected", [(1, 1), (2, 1), (4, 1), (6, 3), (8, 4), (64, 4)])
def test_default_rule(cpus, expected):
    assert default_num_threads(cpus) == expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_num_threads_names_the_field(bad):
    with pytest.raises(ValueError, match="num_threads"):
        EngineArgs(num_threads=bad)


@pytest.mark.parametrize("requested", [1, 2, None])
def test_cpu_engine_applies_its_thread_count(requested):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        create_engine(EngineArgs(model="dummy:tiny", device="cpu", num_kv_blocks=8, num_threads=requested))
        assert torch.get_num_threads() == (requested or default_num_threads())
    finally:
        torch.set_num_threads(before)
