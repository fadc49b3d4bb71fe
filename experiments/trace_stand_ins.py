"""Synthetic stand-ins for the request-length traces, for machines without ../shared/traces (the
experiments' smoke runs in CI): each with its trace's median prompt and output lengths."""

from __future__ import annotations

from pathlib import Path

import yaml

from adaptive_sarathi.workloads import SHARED_TRACES, LogNormal, SyntheticLengths, WorkloadSpec
from adaptive_sarathi.workloads.yaml_file import load_workload, parse_workload

# Each trace's stand-in, as workload-file `synthetic:` fields.
_STAND_IN_FIELDS = {
    "sharegpt_8k": {"prompt": {"dist": "lognormal", "median": 1730, "sigma": 0.9, "max": 7000},
                    "output": {"dist": "lognormal", "median": 415, "sigma": 0.7, "max": 1024}},
    "arxiv_4k": {"prompt": {"dist": "lognormal", "median": 2730, "sigma": 0.25, "max": 4000},
                 "output": {"dist": "lognormal", "median": 167, "sigma": 0.8, "max": 1024}},
}


def _lognormal(fields: dict) -> LogNormal:
    return LogNormal(fields["median"], fields["sigma"], max=fields["max"])


SYNTHETIC_STAND_INS = {name: SyntheticLengths(_lognormal(f["prompt"]), _lognormal(f["output"]))
                       for name, f in _STAND_IN_FIELDS.items()}


def traces_present() -> bool:
    return all((SHARED_TRACES / f"{name}.csv").is_file() for name in SYNTHETIC_STAND_INS)


def workload_file(path: Path, seed: int = 0) -> WorkloadSpec:
    """The workload file `path`; where the traces are absent, with every mix component that names
    a trace given that trace's synthetic stand-in instead (a note says so)."""
    if traces_present():
        return load_workload(path, seed=seed)
    print(f"note: {SHARED_TRACES} lacks the traces: {path.name} uses synthetic stand-ins", flush=True)
    data = yaml.safe_load(path.read_text())
    for phase in data["phases"]:
        for component in phase.get("mix", ()):
            trace = component.pop("trace", None)
            if trace is not None:
                component["synthetic"] = _STAND_IN_FIELDS[trace]
    return parse_workload(data, base_dir=path.parent, seed=seed)
