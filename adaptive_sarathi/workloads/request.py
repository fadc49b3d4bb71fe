"""One request of a workload: when it arrives, how many tokens it reads and writes, and its SLO class."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    """arrival_time_s on the workload's clock (the first phase starts at 0); token counts >= 1.
    The output length is exact: replays ignore EOS and stop after num_output_tokens. slo_class
    names the SLO policy's request class whose targets judge it (None: the top-level targets).

    Where content matters (prefix caching), prompt_token_ids holds the prompt's token ids
    (num_prompt_tokens of them) and output_token_ids the answer the workload records for it (what
    a later turn's prompt repeats; num_output_tokens of them); None: only the counts are known,
    and such prompts share nothing. turn: the request's index in its conversation (0 for the
    first), None outside conversations."""

    arrival_time_s: float
    num_prompt_tokens: int
    num_output_tokens: int
    slo_class: str | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    output_token_ids: tuple[int, ...] | None = None
    turn: int | None = None


Workload = list[WorkloadRequest]


class WorkloadError(ValueError):
    """A workload file, flag or trace that cannot be used; the message names the field and the fix."""
