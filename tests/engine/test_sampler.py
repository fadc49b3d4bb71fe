"""Sampling: greedy is argmax, filters restrict the support, seeds make draws reproducible."""

import torch

from adaptive_sarathi.engine.sampler import sample
from adaptive_sarathi.engine.sampling_params import SamplingParams


def test_greedy_is_argmax():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    assert sample(logits, [SamplingParams()] * 5, [0] * 5) == logits.argmax(-1).tolist()


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=1.5, top_k=1)] * 2 + [SamplingParams(temperature=1.5, top_p=1e-6)] * 2
    assert sample(logits, params, [0] * 4) == logits.argmax(-1).tolist()


def test_top_k_restricts_support():
    logits = torch.randn(1, 30, generator=torch.Generator().manual_seed(2))
    allowed = set(torch.topk(logits[0], 3).indices.tolist())
    gen = torch.Generator().manual_seed(0)
    draws = {sample(logits, [SamplingParams(temperature=5.0, top_k=3)], [0], gen)[0] for _ in range(200)}
    assert draws <= allowed and len(draws) > 1


def test_top_p_keeps_smallest_prefix_reaching_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {sample(logits, [SamplingParams(temperature=1.0, top_p=0.7)], [0], gen)[0] for _ in range(300)}
    assert draws == {0, 1}


def test_seeded_draw_ignores_batch_and_generator_state():
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(3))
    p = SamplingParams(temperature=1.0, seed=1234)
    alone = sample(logits[1:2], [p], [7], torch.Generator().manual_seed(99))
    in_batch = sample(logits, [SamplingParams(temperature=1.0), p, SamplingParams()], [0, 7, 0],
                      torch.Generator().manual_seed(5))
    assert in_batch[1] == alone[0]
    # A different output index draws from a different stream.
    draws = {sample(logits[1:2], [p], [i])[0] for i in range(20)}
    assert len(draws) > 1
