"""Token choice per request: greedy, or temperature with top-k / top-p, optionally seeded."""

from __future__ import annotations

import torch

from adaptive_sarathi.engine.sampling_params import SamplingParams

_SEED_STRIDE = 1_000_003  # a prime, so (seed, output index) pairs map to distinct generator seeds


def sample(logits: torch.Tensor, params: list[SamplingParams], num_output_tokens: list[int],
           generator: torch.Generator | None = None) -> list[int]:
    """One token id per row of logits [N, vocab].

    A seeded request draws from a generator keyed by (seed, number of outputs so far), so its
    tokens do not depend on batch composition or preemption. Unseeded requests share `generator`.
    logits are not modified.
    """
    logits = logits.float()
    tokens = logits.argmax(dim=-1).tolist()
    for i, p in enumerate(params):
        if p.greedy:
            continue
        probs = _filtered_probs(logits[i], p)
        if p.seed is not None:
            gen = torch.Generator(device=logits.device).manual_seed(
                (p.seed * _SEED_STRIDE + num_output_tokens[i]) % (1 << 63))
        else:
            gen = generator
        tokens[i] = int(torch.multinomial(probs, 1, generator=gen).item())
    return tokens


def _filtered_probs(row: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    row = row / p.temperature
    if p.top_k > 0 and p.top_k < row.shape[-1]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    probs = torch.softmax(row, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return probs
