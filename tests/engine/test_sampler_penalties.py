"""Penalties, min_tokens and logprobs in the sampler, each against a plain-torch reference written
row by row from vLLM's definitions."""

import math
import random

import pytest
import torch

from adaptive_sarathi.engine.batch import SamplingHistory
from adaptive_sarathi.engine.sampler import logprobs, sample
from adaptive_sarathi.engine.sampling_params import SamplingParams

VOCAB = 64


def reference_adjust(row: torch.Tensor, params: SamplingParams, history: SamplingHistory,
                     num_output_tokens: int) -> torch.Tensor:
    """One row, one token at a time: min_tokens masks the stop ids, then repetition (prompt and
    output tokens), frequency (per occurrence in the output) and presence (once per output token)."""
    x = row.clone().float()
    if num_output_tokens < params.min_tokens:
        for t in history.stop_ids:
            x[t] = -math.inf
    seen = set(history.prompt_token_ids) | set(history.output_token_ids)
    for t in range(len(x)):
        if t in seen and params.repetition_penalty != 1.0:
            x[t] = x[t] / params.repetition_penalty if x[t] > 0 else x[t] * params.repetition_penalty
        count = history.output_token_ids.count(t)
        x[t] -= params.frequency_penalty * count
        if count:
            x[t] -= params.presence_penalty
    return x


def random_case(rng: random.Random):
    params = SamplingParams(
        max_tokens=50, temperature=rng.choice([0.0, 0.7, 1.3]), seed=rng.randrange(1 << 30),
        presence_penalty=rng.choice([0.0, -1.5, 0.8, 2.0]), frequency_penalty=rng.choice([0.0, 0.5, -0.7]),
        repetition_penalty=rng.choice([1.0, 1.3, 0.6]), min_tokens=rng.choice([0, 3, 10]))
    history = SamplingHistory([rng.randrange(VOCAB) for _ in range(rng.randrange(1, 30))],
                              [rng.randrange(VOCAB) for _ in range(rng.randrange(0, 20))], (rng.randrange(VOCAB), 5))
    return params, history, rng.randrange(0, 12)


def test_penalties_and_min_tokens_match_the_reference_greedy_and_seeded():
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    cases = [random_case(rng) for _ in range(200)]
    logits = torch.randn(len(cases), VOCAB, generator=gen) * 3
    params, histories, outputs = zip(*cases)
    got = sample(logits, list(params), list(outputs), histories=list(histories))
    # The reference: the adjusted row, sampled with the same seed and no adjustment left to make.
    plain = [SamplingParams(max_tokens=50, temperature=p.temperature, seed=p.seed) for p in params]
    adjusted = torch.stack([reference_adjust(logits[i], p, h, k) for i, (p, h, k) in enumerate(cases)])
    want = sample(adjusted, plain, list(outputs))
    assert got == want
    # The cases do exercise the penalties: without them the choices differ in many rows.
    assert sum(a != b for a, b in zip(got, sample(logits, plain, list(outputs)))) > 40


def test_min_tokens_keeps_eos_out_until_reached():
    logits = torch.zeros(1, VOCAB)
    logits[0, 7] = 10.0  # EOS is the greedy choice
    history = SamplingHistory([1, 2], [3, 4], (7,))
    p = SamplingParams(max_tokens=10, min_tokens=3)
    assert sample(logits, [p], [2], histories=[history]) != [7]
    assert sample(logits, [p], [3], histories=[history]) == [7]


def test_rows_without_penalties_need_no_history_and_logits_are_untouched():
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(1))
    before = logits.clone()
    hist = SamplingHistory([1], [int(logits[1].argmax())], ())
    params = [SamplingParams(), SamplingParams(frequency_penalty=2.0), SamplingParams()]
    tokens = sample(logits, params, [0, 1, 0], histories=[None, hist, None])
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()
    assert torch.equal(logits, before)
    with pytest.raises(ValueError, match="SamplingHistory"):
        sample(logits, params, [0, 1, 0])


@pytest.mark.parametrize("num_top", [[None, 0, 5], [20, None, 1]])
def test_logprobs_match_log_softmax(num_top):
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(2))
    tokens = [3, 17, 60]
    got = logprobs(logits, tokens, num_top)
    for row, k in enumerate(num_top):
        if k is None:
            assert got[row] is None
            continue
        ref = torch.log_softmax(logits[row].double(), dim=-1)
        assert got[row].token_id == tokens[row]
        assert got[row].logprob == pytest.approx(float(ref[tokens[row]]), abs=1e-5)
        want = torch.topk(ref, k)
        assert [t for t, _ in got[row].top] == want.indices.tolist()
        assert [lp for _, lp in got[row].top] == pytest.approx(want.values.tolist(), abs=1e-5)


def test_no_logprobs_asked_is_all_none():
    assert logprobs(torch.randn(2, VOCAB), [1, 2], [None, None]) == [None, None]


@pytest.mark.parametrize("field,value", [("presence_penalty", 2.5), ("frequency_penalty", -3),
                                         ("repetition_penalty", 0.0), ("min_tokens", 17), ("logprobs", 21)])
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(max_tokens=16, **{field: value})
