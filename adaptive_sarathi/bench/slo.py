"""SLO targets for goodput: parsing `ttft:2000,tbt:100` and checking one request against them."""

from __future__ import annotations

import numpy as np

from adaptive_sarathi.bench.client import RequestResult

SLO_KEYS = {
    "ttft": "time to first token",
    "tbt": "the request's P99 gap between tokens",
    "tpot": "the request's mean time per output token after the first",
    "e2el": "end-to-end latency",
}


def parse_slo(text: str) -> dict[str, float]:
    """`key:milliseconds` pairs separated by commas. Raises ValueError naming a bad pair."""
    targets: dict[str, float] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition(":")
        if not sep or key not in SLO_KEYS:
            raise ValueError(f"SLO '{pair}' is not key:ms with a key among {', '.join(SLO_KEYS)}")
        try:
            targets[key] = float(value)
        except ValueError:
            raise ValueError(f"SLO '{pair}': '{value}' is not a number of milliseconds") from None
        if targets[key] <= 0:
            raise ValueError(f"SLO '{pair}': the target must be > 0 ms")
    return targets


def slo_values_ms(result: RequestResult) -> dict[str, float]:
    """The request's value of every SLO key, in milliseconds."""
    itl = result.itl_s
    return {
        "ttft": result.ttft_s * 1000,
        "tbt": float(np.percentile(itl, 99)) * 1000 if itl else 0.0,
        "tpot": result.tpot_s * 1000,
        "e2el": result.e2e_s * 1000,
    }


def meets_slo(result: RequestResult, targets_ms: dict[str, float]) -> bool:
    """Whether a successful request meets every target; a failed one meets none."""
    if not result.success:
        return False
    values = slo_values_ms(result)
    return all(values[key] <= target for key, target in targets_ms.items())
