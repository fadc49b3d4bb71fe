"""A workload as phases of traffic, each with its own lengths, rate and length; seeded generation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from adaptive_sarathi.workloads.arrivals import ArrivalProcess
from adaptive_sarathi.workloads.lengths import LengthSource, cap_lengths, check_cap
from adaptive_sarathi.workloads.mix import Mix, check_slo_class
from adaptive_sarathi.workloads.request import Workload, WorkloadError, WorkloadRequest


@dataclass(frozen=True)
class Phase:
    """Traffic of one kind for `duration_s` seconds, or for `num_requests` requests (exactly one).

    A phase starts when the previous one ends: after its duration_s, or at its last arrival.
    max_prompt_tokens / max_output_tokens cap the drawn lengths (None = no cap); slo_class is the
    SLO class of every request (None: the top-level targets). With a Mix as `lengths`, each
    arrival draws a component, which sets its lengths, caps and class: the phase's own caps and
    slo_class must then be None.
    """

    lengths: LengthSource | Mix
    arrivals: ArrivalProcess
    duration_s: float | None = None
    num_requests: int | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    slo_class: str | None = None

    def __post_init__(self) -> None:
        if (self.duration_s is None) == (self.num_requests is None):
            raise WorkloadError("a phase needs exactly one of duration_s and num_requests: set one, drop the other")
        if self.duration_s is not None and not (isinstance(self.duration_s, (int, float)) and self.duration_s > 0):
            raise WorkloadError(f"duration_s={self.duration_s!r} is invalid: use a number of seconds > 0")
        if self.num_requests is not None and not (isinstance(self.num_requests, int) and self.num_requests >= 1):
            raise WorkloadError(f"num_requests={self.num_requests!r} is invalid: use an integer >= 1")
        for name in ("max_prompt_tokens", "max_output_tokens"):
            check_cap(name, getattr(self, name))
        check_slo_class(self.slo_class)
        if isinstance(self.lengths, Mix):
            given = [name for name in ("max_prompt_tokens", "max_output_tokens", "slo_class")
                     if getattr(self, name) is not None]
            if given:
                raise WorkloadError(f"{', '.join(given)}: a mix phase sets these per component: move them into "
                                    "the components under mix")

    @property
    def slo_classes(self) -> frozenset[str]:
        """The SLO class names its requests carry."""
        if isinstance(self.lengths, Mix):
            return self.lengths.slo_classes
        return frozenset(() if self.slo_class is None else (self.slo_class,))

    @property
    def expected_duration_s(self) -> float:
        """duration_s, or the mean time num_requests take to arrive."""
        return self.duration_s if self.duration_s is not None else self.num_requests / self.arrivals.qps


@dataclass(frozen=True)
class WorkloadSpec:
    """Phases of traffic and the seed that makes every generated workload reproducible."""

    phases: tuple[Phase, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.phases:
            raise WorkloadError("a workload needs at least one phase: add an entry under phases")
        if not isinstance(self.seed, int):
            raise WorkloadError(f"seed={self.seed!r} is invalid: use an integer")

    @property
    def mean_qps(self) -> float:
        """Request rate averaged over the phases' (expected) durations."""
        total = sum(p.expected_duration_s for p in self.phases)
        return sum(p.arrivals.qps * p.expected_duration_s for p in self.phases) / total

    @property
    def slo_classes(self) -> frozenset[str]:
        """The SLO class names its requests carry (empty when every request has the top-level targets)."""
        return frozenset().union(*(p.slo_classes for p in self.phases))

    def scaled(self, factor: float) -> "WorkloadSpec":
        """The same workload with every phase's rate multiplied by `factor` (durations kept)."""
        if not factor > 0:
            raise WorkloadError(f"qps scale factor {factor!r} is invalid: use a number > 0")
        return replace(self, phases=tuple(replace(p, arrivals=p.arrivals.scaled(factor)) for p in self.phases))

    def with_requests_per_phase(self, num_requests: int) -> "WorkloadSpec":
        """The same workload with every phase ending after `num_requests` requests (its
        duration_s, if it had one, dropped). Draws stay the same: a longer phase adds arrivals."""
        return replace(self, phases=tuple(replace(p, num_requests=num_requests, duration_s=None) for p in self.phases))

    def generate(self) -> Workload:
        """The requests of every phase in arrival order. Deterministic in (phases, seed); phase k
        draws from its own streams, so changing one phase leaves the others' draws alone (and in
        a mix phase, each component's lengths and the component draw have their own streams:
        Mix.sample)."""
        requests: Workload = []
        start = 0.0
        for index, phase in enumerate(self.phases):
            arrival_rng = np.random.default_rng([self.seed, index, 0])
            times = phase.arrivals.times(arrival_rng, start, num_requests=phase.num_requests,
                                         duration_s=phase.duration_s)
            if isinstance(phase.lengths, Mix):
                prompts, outputs, classes = phase.lengths.sample((self.seed, index), len(times))
            else:
                prompts, outputs = phase.lengths.sample(np.random.default_rng([self.seed, index, 1]), len(times))
                prompts, outputs = cap_lengths(prompts, outputs, phase.max_prompt_tokens, phase.max_output_tokens)
                classes = [phase.slo_class] * len(times)
            requests.extend(WorkloadRequest(t, p, o, c) for t, p, o, c in
                            zip(times.tolist(), prompts.tolist(), outputs.tolist(), classes))
            if phase.duration_s is not None:
                start += phase.duration_s
            elif len(times):
                start = float(times[-1])
        return requests


def single_phase(lengths: LengthSource, qps: float, *, num_requests: int | None = None,
                 duration_s: float | None = None, cv: float = 1.0, max_prompt_tokens: int | None = None,
                 max_output_tokens: int | None = None, seed: int = 0) -> WorkloadSpec:
    """A stationary workload: one phase. Raises WorkloadError naming a bad argument."""
    return WorkloadSpec((Phase(lengths, ArrivalProcess(qps, cv), duration_s=duration_s, num_requests=num_requests,
                               max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens),), seed)
