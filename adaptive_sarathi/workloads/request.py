"""One request of a workload: when it arrives, how many tokens it reads and writes, and its SLO class."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    """arrival_time_s on the workload's clock (the first phase starts at 0); token counts >= 1.
    The output length is exact: replays ignore EOS and stop after num_output_tokens. slo_class
    names the SLO policy's request class whose targets judge it (None: the top-level targets)."""

    arrival_time_s: float
    num_prompt_tokens: int
    num_output_tokens: int
    slo_class: str | None = None


Workload = list[WorkloadRequest]


class WorkloadError(ValueError):
    """A workload file, flag or trace that cannot be used; the message names the field and the fix."""
