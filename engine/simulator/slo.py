"""SLO targets a simulation is judged against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SloTargets:
    """TTFT and TBT targets in seconds (None = not declared) and the percentiles they bound.

    A request meets the TTFT target when its TTFT <= ttft_s, and the TBT target when the
    tbt_percentile-th percentile of its own token gaps is <= tbt_s. A run meets them when the
    ttft_percentile-th TTFT over requests and the tbt_percentile-th gap over all tokens do.
    """

    ttft_s: float | None = None
    tbt_s: float | None = None
    ttft_percentile: float = 99.0
    tbt_percentile: float = 99.0

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tbt_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name}={value!r} is invalid: use a number of seconds > 0 or None")
        for name in ("ttft_percentile", "tbt_percentile"):
            value = getattr(self, name)
            if not 0 < value <= 100:
                raise ValueError(f"{name}={value!r} is invalid: use a percentile in (0, 100]")

    @property
    def is_empty(self) -> bool:
        return self.ttft_s is None and self.tbt_s is None
