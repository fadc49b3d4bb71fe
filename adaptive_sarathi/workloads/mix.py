"""Mixed traffic: the arrivals of one phase, each drawing a component (its lengths and SLO class)
by share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adaptive_sarathi.workloads.lengths import LengthSource, cap_lengths, check_cap
from adaptive_sarathi.workloads.request import WorkloadError


def check_slo_class(value: object) -> None:
    """Raise WorkloadError unless `value` is None or a non-empty class name. Whether the SLO
    policy declares the class is checked where the two meet (the simulation scenario)."""
    if value is not None and not (isinstance(value, str) and value.strip() == value and value):
        raise WorkloadError(f"slo_class={value!r} is invalid: use the name of a class of the SLO policy "
                            "(e.g. interactive) or leave it out")


@dataclass(frozen=True)
class MixComponent:
    """One kind of request in a mix: its lengths, its share of the arrivals (any number > 0; the
    shares of a mix are normalized), the SLO class its requests carry (None: the top-level
    targets) and caps on its drawn lengths (None = no cap)."""

    lengths: LengthSource
    share: float
    slo_class: str | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.share, bool) or not isinstance(self.share, (int, float)) or not (
                0 < self.share < math.inf):
            raise WorkloadError(f"share={self.share!r} is invalid: use a finite number > 0 (shares are normalized "
                                "over the mix, e.g. 3 and 1 for 75% and 25%)")
        check_slo_class(self.slo_class)
        check_cap("max_prompt_tokens", self.max_prompt_tokens)
        check_cap("max_output_tokens", self.max_output_tokens)


@dataclass(frozen=True)
class Mix:
    """Components sharing one arrival process: each arrival is of component k with probability
    share_k / sum(shares)."""

    components: tuple[MixComponent, ...]

    def __post_init__(self) -> None:
        if not self.components:
            raise WorkloadError("mix: needs at least one component: add {trace: NAME, share: 1} or "
                                "{synthetic: ..., share: 1}")

    @property
    def probabilities(self) -> np.ndarray:
        """The normalized shares, in component order."""
        shares = np.array([c.share for c in self.components], dtype=float)
        return shares / shares.sum()

    def sample(self, rng_key: Sequence[int], n: int) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Prompt and output lengths (int64 arrays) and SLO classes of `n` arrivals in order.

        Which component each arrival is comes from the stream default_rng([*rng_key, 2]) alone,
        component k's lengths from default_rng([*rng_key, 1, k]): changing one component's
        lengths or caps changes neither which component an arrival drew nor the other
        components' lengths. The k-th draw is the same whatever n (a prefix), so a rate change
        that adds arrivals keeps the earlier arrivals' components. Mutates nothing."""
        cumulative = np.cumsum(self.probabilities)
        uniform = np.random.default_rng([*rng_key, 2]).random(n)
        # The last edge may round below 1.0; clip so that every draw names a component.
        drawn = np.minimum(np.searchsorted(cumulative, uniform, side="right"), len(self.components) - 1)
        prompts = np.empty(n, dtype=np.int64)
        outputs = np.empty(n, dtype=np.int64)
        for k, component in enumerate(self.components):
            mine = drawn == k
            p, o = component.lengths.sample(np.random.default_rng([*rng_key, 1, k]), int(mine.sum()))
            prompts[mine], outputs[mine] = cap_lengths(p, o, component.max_prompt_tokens, component.max_output_tokens)
        return prompts, outputs, [self.components[k].slo_class for k in drawn.tolist()]

    @property
    def slo_classes(self) -> frozenset[str]:
        return frozenset(c.slo_class for c in self.components if c.slo_class is not None)
