"""A workload of given requests (e.g. the ones a benchmark sent), usable wherever a WorkloadSpec is."""

from __future__ import annotations

from dataclasses import dataclass, replace

from adaptive_sarathi.workloads.request import Workload, WorkloadError, WorkloadRequest


@dataclass(frozen=True)
class RecordedWorkload:
    """Fixed requests on the workload clock (the first phase starts at 0), sorted by arrival on
    construction. generate() returns them; scaled(f) divides every arrival time by f, as a
    WorkloadSpec's rate scaling does."""

    requests: tuple[WorkloadRequest, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.requests:
            raise WorkloadError(f"{self.source or 'the recorded workload'} has no requests: record a run that "
                                "sent at least one")
        object.__setattr__(self, "requests", tuple(sorted(self.requests, key=lambda r: r.arrival_time_s)))

    @property
    def mean_qps(self) -> float:
        """Requests per second of arrival time (inf when all arrive at time 0)."""
        last = self.requests[-1].arrival_time_s
        return len(self.requests) / last if last > 0 else float("inf")

    @property
    def slo_classes(self) -> frozenset[str]:
        """The SLO class names its requests carry."""
        return frozenset(r.slo_class for r in self.requests if r.slo_class is not None)

    def scaled(self, factor: float) -> "RecordedWorkload":
        if not factor > 0:
            raise WorkloadError(f"qps scale factor {factor!r} is invalid: use a number > 0")
        if factor == 1.0:
            return self
        return RecordedWorkload(tuple(replace(r, arrival_time_s=r.arrival_time_s / factor) for r in self.requests),
                                self.source)

    def generate(self) -> Workload:
        return list(self.requests)
