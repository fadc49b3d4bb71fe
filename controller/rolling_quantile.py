"""Quantiles of the last N values of a stream, any quantile at any time."""

from __future__ import annotations

import bisect
from collections import deque


class RollingQuantile:
    """The last `window` values kept sorted: O(window) memmove per update (a few hundred ns at the
    sizes used here), O(1) per quantile query. A fixed-q river stats.RollingQuantile would need one
    instance per quantile; callers ask for the SLO's quantile, known only at run time."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window={window!r} is invalid: use an integer >= 1")
        self.window = window
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def update(self, value: float) -> None:
        """Add `value`, dropping the oldest once `window` values are held."""
        if len(self._order) == self.window:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._order.append(value)
        bisect.insort(self._sorted, value)

    def clear(self) -> None:
        self._order.clear()
        self._sorted.clear()

    def quantile(self, q: float) -> float:
        """The q-quantile (0 <= q <= 1), linearly interpolated; raises ValueError when empty."""
        s = self._sorted
        if not s:
            raise ValueError("no values yet: call update() first")
        pos = q * (len(s) - 1)
        i = int(pos)
        if i >= len(s) - 1:
            return s[-1]
        return s[i] + (s[i + 1] - s[i]) * (pos - i)

    def max(self) -> float:
        return self._sorted[-1]
