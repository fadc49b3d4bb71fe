"""A virtual clock: simulated seconds that move only when told to."""

from __future__ import annotations


class VirtualClock:
    """Engine time for simulation. Pass `clock.now` as the LLMEngine's clock; the simulated
    executor advances it by each step's predicted duration, the driver jumps it over idle gaps."""

    def __init__(self, start_s: float = 0.0):
        self.now_s = float(start_s)

    def now(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        """Move forward by `seconds`. Raises ValueError for a negative amount."""
        if seconds < 0:
            raise ValueError(f"cannot advance a clock by {seconds} s: durations must be >= 0")
        self.now_s += seconds

    def jump_to(self, time_s: float) -> None:
        """Move forward to `time_s`. Raises ValueError when it lies in the past."""
        if time_s < self.now_s:
            raise ValueError(f"cannot move the clock back from {self.now_s} s to {time_s} s")
        self.now_s = time_s
