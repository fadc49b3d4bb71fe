"""The features an online latency model sees for one step shape."""

from __future__ import annotations

from adaptive_sarathi.engine.latency.shape import StepShape

# Token counts are divided by 1024 and contexts by 65536 so every feature is O(1): the regression's
# ridge prior then shrinks all of them alike.
_TOKENS = 1.0 / 1024
_CONTEXT = 1.0 / 65536

# The order of feature_values(); "prior" only for models with a prior.
FEATURE_NAMES = ("bias", "prefill", "decode", "tiles", "over_knee", "prefill_seqs", "context", "prefill_attn")
FEATURE_NAMES_WITH_PRIOR = (*FEATURE_NAMES, "prior")


def feature_values(shape: StepShape, tile_tokens: int, knee_tokens: int, prior_ms: float | None) -> tuple[float, ...]:
    """Scaled features of `shape`, in the order of FEATURE_NAMES (FEATURE_NAMES_WITH_PRIOR when
    prior_ms is given).

    tiles: total tokens rounded up to the GEMM tile, so the model can learn the step a batch pays
    when it spills into a new tile (on H100, 520 tokens cost like 640).
    over_knee: tokens beyond `knee_tokens`, where small batches stop being bandwidth-bound and
    time starts growing with tokens (the roofline's max(memory, compute) kink).
    prefill_attn: the quadratic attention work of the prefill chunks, (P^2 / prefill seqs).
    prior: the prior model's prediction, so a mis-scaled prior is corrected by one weight.
    """
    p = shape.num_prefill_tokens
    d = shape.num_decode_tokens
    n = p + d
    s = shape.num_prefill_seqs
    values = (1.0, p * _TOKENS, d * _TOKENS, -(-n // tile_tokens) * tile_tokens * _TOKENS,
              max(0, n - knee_tokens) * _TOKENS, s / 16.0, shape.sum_context_tokens * _CONTEXT,
              (p * _TOKENS) ** 2 / s if s else 0.0)
    return values if prior_ms is None else (*values, prior_ms / 100.0)


def step_features(shape: StepShape, tile_tokens: int, knee_tokens: int, prior_ms: float | None) -> dict[str, float]:
    """feature_values() as a fresh dict keyed by feature name (what the regression learns from)."""
    names = FEATURE_NAMES if prior_ms is None else FEATURE_NAMES_WITH_PRIOR
    return dict(zip(names, feature_values(shape, tile_tokens, knee_tokens, prior_ms)))
