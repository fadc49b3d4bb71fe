"""Workloads: request lengths (traces or synthetic), arrival processes and phased traffic."""

from adaptive_sarathi.workloads.arrivals import ArrivalProcess
from adaptive_sarathi.workloads.conversations import ConversationWorkload, shareable_prompt_tokens
from adaptive_sarathi.workloads.flags import workload_from_flags
from adaptive_sarathi.workloads.lengths import Fixed, LengthSource, LogNormal, SyntheticLengths, TraceLengths, Uniform
from adaptive_sarathi.workloads.mix import Mix, MixComponent
from adaptive_sarathi.workloads.recorded import RecordedWorkload
from adaptive_sarathi.workloads.request import Workload, WorkloadError, WorkloadRequest
from adaptive_sarathi.workloads.spec import Phase, WorkloadSpec, single_phase
from adaptive_sarathi.workloads.traces import SHARED_TRACES, RequestLengths, load_trace, resolve_trace
from adaptive_sarathi.workloads.yaml_file import EXAMPLE_WORKLOADS, load_workload, parse_workload, resolve_workload

__all__ = [
    "EXAMPLE_WORKLOADS", "ArrivalProcess", "ConversationWorkload", "Fixed", "LengthSource", "LogNormal", "Mix", "MixComponent", "Phase", "RecordedWorkload",
    "RequestLengths", "SHARED_TRACES", "SyntheticLengths", "TraceLengths", "Uniform", "Workload", "WorkloadError",
    "WorkloadRequest", "WorkloadSpec", "load_trace", "load_workload", "parse_workload", "resolve_trace",
    "resolve_workload", "shareable_prompt_tokens", "single_phase", "workload_from_flags",
]
