"""SLO targets per request class, as plain seconds: what a simulation is judged against and what
the engine stamps each request's deadlines with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class SloTargets:
    """TTFT and TBT targets in seconds (None = not declared) and the percentiles they bound.

    A run meets them when the ttft_percentile-th TTFT over requests is <= ttft_s and the
    tbt_percentile-th gap over every token gap of every request (per gap, as vLLM and
    inference-perf count TBT/ITL) is <= tbt_s. For goodput, a request meets the TTFT target when
    its TTFT <= ttft_s, and the TBT target when the tbt_percentile-th of its own gaps is <= tbt_s.

    classes: the targets of each named request class (plain records without classes of their
    own, e.g. built from an SLO policy's classes). A request whose slo_class names one is judged
    by those; a request without a class by the top-level ones (targets_for).
    """

    ttft_s: float | None = None
    tbt_s: float | None = None
    ttft_percentile: float = 99.0
    tbt_percentile: float = 99.0
    classes: Mapping[str, "SloTargets"] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, targets in self.classes.items():
            if not (isinstance(name, str) and name):
                raise ValueError(f"classes key {name!r} is invalid: use a non-empty class name")
            if not isinstance(targets, SloTargets) or targets.classes:
                raise ValueError(f"classes[{name!r}] is invalid: use an SloTargets without classes of its own")
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
        """No target declared, at the top level or for any class."""
        return self.ttft_s is None and self.tbt_s is None and all(c.is_empty for c in self.classes.values())

    def targets_for(self, slo_class: str | None) -> "SloTargets":
        """The targets that judge a request of class `slo_class`: the class's, or for None the
        top-level ones (without classes). Raises ValueError naming the known classes for an
        unknown name."""
        if slo_class is None:
            return SloTargets(self.ttft_s, self.tbt_s, self.ttft_percentile, self.tbt_percentile)
        try:
            return self.classes[slo_class]
        except KeyError:
            known = ", ".join(self.classes) or "none"
            raise ValueError(f"request class {slo_class!r} has no SLO targets (classes with targets: {known}): "
                             "use an SLO policy that declares the class, or drop slo_class from the workload") from None
