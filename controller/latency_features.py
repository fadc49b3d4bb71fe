"""The features an online latency model sees for one step shape."""

from __future__ import annotations

from adaptive_sarathi.engine.latency.shape import StepShape

# Token counts are divided by 1024 and contexts by 65536 so every feature is O(1): the regression's
# ridge prior then shrinks all of them alike.
_TOKENS = 1.0 / 1024
_CONTEXT = 1.0 / 65536


def step_features(shape: StepShape, tile_tokens: int, knee_tokens: int, prior_ms: float | None) -> dict[str, float]:
    """A fresh dict of scaled features of `shape` (not mutated).

    tiles: total tokens rounded up to the GEMM tile, so the model can learn the step a batch pays
    when it spills into a new tile (on H100, 520 tokens cost like 640).
    over_knee: tokens beyond `knee_tokens`, where small batches stop being bandwidth-bound and
    time starts growing with tokens (the roofline's max(memory, compute) kink).
    prefill_attn: the quadratic attention work of the prefill chunks, (P^2 / prefill seqs).
    prior: the prior model's prediction, so a mis-scaled prior is corrected by one weight.
    """
    p = shape.num_prefill_tokens
    n = p + shape.num_decode_tokens
    s = shape.num_prefill_seqs
    x = {
        "bias": 1.0,
        "prefill": p * _TOKENS,
        "decode": shape.num_decode_tokens * _TOKENS,
        "tiles": -(-n // tile_tokens) * tile_tokens * _TOKENS,
        "over_knee": max(0, n - knee_tokens) * _TOKENS,
        "prefill_seqs": s / 16.0,
        "context": shape.sum_context_tokens * _CONTEXT,
        "prefill_attn": (p * _TOKENS) ** 2 / s if s else 0.0,
    }
    if prior_ms is not None:
        x["prior"] = prior_ms / 100.0
    return x
