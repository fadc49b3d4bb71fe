"""Plain values made fit for JSON."""

from __future__ import annotations

import math


def json_safe(value):
    """`value` (dicts, lists and tuples of plain values) with every NaN and inf float replaced by
    None: JSON has neither (an empty sample's percentiles are NaN, a failed request's TTFT inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
