"""The one rule by which every command (`simulate`, `capacity`, `tune`, `bench`) turns its workload
flags into a WorkloadSpec (or, for a conversations file, a ConversationWorkload, which offers the
same generate/scaled/mean_qps/slo_classes), so that the same flags and seed draw the same
requests everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from adaptive_sarathi.workloads.conversations import ConversationWorkload
from adaptive_sarathi.workloads.lengths import LengthSource, TraceLengths
from adaptive_sarathi.workloads.request import WorkloadError
from adaptive_sarathi.workloads.spec import WorkloadSpec, single_phase
from adaptive_sarathi.workloads.traces import resolve_trace
from adaptive_sarathi.workloads.yaml_file import load_workload

# Settings that only a single-phase workload takes (a workload file sets them per phase), by the
# flag that gives them.
_SINGLE_PHASE_FLAGS = {"qps": "--qps", "num_requests": "--num-requests", "cv": "--cv",
                       "max_prompt_tokens": "--max-prompt-tokens", "max_output_tokens": "--max-output-tokens",
                       "max_total_len": "--max-total-len"}


def workload_from_flags(*, trace: str | Path | None = None, workload: str | Path | None = None,
                        lengths: LengthSource | None = None, qps: float | None = None,
                        num_requests: int | None = None, cv: float | None = None,
                        max_prompt_tokens: int | None = None, max_output_tokens: int | None = None,
                        max_total_len: int | None = None, seed: int = 0,
                        flag_names: Mapping[str, str] | None = None) -> WorkloadSpec | ConversationWorkload:
    """The workload of exactly one source: a trace (name or CSV; rows over max_total_len tokens
    left out, then drawn with replacement), a workload YAML file, or `lengths` (e.g. fixed
    synthetic lengths). A trace or `lengths` makes one phase of `num_requests` requests at mean
    rate `qps` with gap variation `cv` (None: 1, Poisson) and the length caps; a file sets those
    per phase, so with `workload` they must all be None. Draws nothing: call generate().

    Raises WorkloadError (a ValueError) naming the flag (`flag_names` maps a setting to the flag
    that gives it, where a command spells it differently from --qps, --cv, ...) for a bad or
    conflicting setting, FileNotFoundError for a missing trace or file."""
    names = {**_SINGLE_PHASE_FLAGS, **(flag_names or {})}
    if sum(source is not None for source in (trace, workload, lengths)) != 1:
        raise WorkloadError("give exactly one workload: --trace NAME|CSV (with --qps) or --workload YAML")
    settings = {"qps": qps, "num_requests": num_requests, "cv": cv, "max_prompt_tokens": max_prompt_tokens,
                "max_output_tokens": max_output_tokens, "max_total_len": max_total_len}
    if workload is not None:
        given = [names[key] for key, value in settings.items() if value is not None]
        if given:
            raise WorkloadError(f"{', '.join(given)}: only for --trace; set such values per phase in {workload}")
        return load_workload(workload, seed=seed)
    if qps is None or num_requests is None:
        raise WorkloadError(f"a single-phase workload needs {names['qps']} and {names['num_requests']}")
    if trace is not None:
        lengths = TraceLengths(resolve_trace(trace), max_total_len)
    elif max_total_len is not None:
        raise WorkloadError(f"{names['max_total_len']}: only with --trace (it leaves out trace rows that do not fit)")
    return single_phase(lengths, qps, num_requests=num_requests, cv=1.0 if cv is None else cv,
                        max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens, seed=seed)
