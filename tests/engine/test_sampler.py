"""Sampling: greedy is argmax, filters restrict the support, seeds make draws reproducible."""

import pytest
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


PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


def frequencies(tokens: list[int]) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens), minlength=len(PROBS)).float() / len(tokens)


def test_seeded_draws_follow_the_tempered_softmax():
    """Over 4000 output indices one seeded request draws each token at its probability (4000
    draws: a standard error under 0.008; the draws are fixed by the seed, so this cannot flake)."""
    logits = PROBS.log()[None, :]
    for temperature in (1.0, 2.0):
        p = SamplingParams(temperature=temperature, seed=7)
        draws = [sample(logits, [p], [i])[0] for i in range(4000)]
        expected = torch.softmax(PROBS.log() / temperature, dim=-1)
        torch.testing.assert_close(frequencies(draws), expected, atol=0.03, rtol=0)


def test_unseeded_rows_of_one_batch_draw_independently():
    logits = PROBS.log().repeat(4000, 1)
    draws = sample(logits, [SamplingParams(temperature=1.0)] * 4000, [0] * 4000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(frequencies(draws), PROBS, atol=0.03, rtol=0)


def test_top_k_and_top_p_together_renormalize_what_is_left():
    # top_k 3 keeps {0, 1, 2}; of those (0.5, 0.3, 0.15 / 0.95) the nucleus of 0.7 is {0, 1}.
    logits = PROBS.log().repeat(4000, 1)
    p = SamplingParams(temperature=1.0, top_k=3, top_p=0.7)
    draws = sample(logits, [p] * 4000, [0] * 4000, torch.Generator().manual_seed(5))
    torch.testing.assert_close(frequencies(draws), torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.03, rtol=0)


def test_each_row_keeps_its_own_settings_in_a_mixed_batch():
    logits = torch.randn(6, 200, generator=torch.Generator().manual_seed(6))
    params = [SamplingParams(), SamplingParams(temperature=3.0, top_k=1), SamplingParams(temperature=3.0, top_k=5),
              SamplingParams(temperature=3.0, top_p=1e-6), SamplingParams(temperature=3.0, seed=3),
              SamplingParams(temperature=3.0, top_k=2, seed=4)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        tokens = sample(logits, params, list(range(6)), gen)
        assert tokens[:2] == logits[:2].argmax(-1).tolist()
        assert tokens[2] in torch.topk(logits[2], 5).indices.tolist()
        assert tokens[3] == int(logits[3].argmax())
        assert tokens[5] in torch.topk(logits[5], 2).indices.tolist()
    # Seeded rows ignore the generator: the same output index draws the same token.
    assert sample(logits, params, list(range(6)), torch.Generator().manual_seed(1))[4:] == \
        sample(logits, params, list(range(6)), torch.Generator().manual_seed(2))[4:]


@pytest.mark.parametrize("temperature", [1e-38, 5e-324, 1e-6])
def test_temperatures_too_small_to_divide_by_are_greedy(temperature):
    # logits / 1e-38 overflow to inf and the softmax of infinities is NaN: such rows must take
    # the argmax, not a draw from garbage.
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 10
    params = [SamplingParams(temperature=temperature, seed=s) for s in range(4)]
    assert sample(logits, params, [0] * 4) == logits.argmax(dim=-1).tolist()


def test_min_p_masks_exactly_the_tokens_below_the_threshold():
    # probabilities 0.5, 0.3, 0.15, 0.05: min_p 0.5 keeps p >= 0.25, i.e. tokens {0, 1} only.
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    gen = torch.Generator().manual_seed(0)
    draws = {sample(logits, [SamplingParams(temperature=1.0, min_p=0.5)], [0], gen)[0] for _ in range(300)}
    assert draws == {0, 1}
    unfiltered = {sample(logits, [SamplingParams(temperature=1.0)], [0], gen)[0] for _ in range(300)}
    assert unfiltered == {0, 1, 2, 3}
