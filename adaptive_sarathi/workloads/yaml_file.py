"""Workload files: phases of traffic in YAML, validated with errors that name the field and the fix.

    phases:
      - trace: sharegpt_8k          # a CSV path (relative to this file) or a name in ../shared/traces
        qps: 2.0
        duration_s: 300             # or num_requests: 600
        cv: 1.0                     # optional gap variation: 1 = Poisson (default), else gamma gaps
        max_prompt_tokens: 4096     # optional caps on drawn lengths
        max_output_tokens: 1024
        max_total_len: 8192         # optional, trace phases: leave out rows whose prompt + output exceed it
      - synthetic:
          prompt: {dist: lognormal, median: 1000, sigma: 1.0, max: 4096}
          output: {dist: uniform, low: 16, high: 512}    # or {dist: fixed, value: 128}, or just 128
        qps: 4.0
        num_requests: 500
        slo_class: batch            # optional: the SLO policy's class of these requests
      - mix:                        # components sharing the phase's arrivals, each drawn by share
          - {trace: sharegpt_8k, share: 3, slo_class: interactive, max_output_tokens: 512}
          - {synthetic: {prompt: 3000, output: 200}, share: 1, slo_class: batch}
        qps: 5.0
        duration_s: 60

Or, instead of phases, multi-turn conversations (real token ids, so prefix caching finds what
they share; adaptive_sarathi.workloads.conversations):

    conversations:
      num_conversations: 400
      conversation_qps: 1.0         # conversation starts per second (Poisson)
      turns: {dist: uniform, low: 2, high: 8}
      user_tokens: {dist: lognormal, median: 200, sigma: 0.8, max: 1500}
      output_tokens: {dist: lognormal, median: 250, sigma: 0.8, max: 800}
      system_prompt_tokens: 1000    # optional: a shared header (default 0: none)
      num_system_prompts: 8         # optional: how many distinct headers (default 1)
      think_time_s: 20              # optional: mean gap between a conversation's turns (default 30)
      max_context_tokens: 8000      # optional (default 8192)
      slo_class: interactive        # optional

The format, with the random streams that keep draws stable, is documented in docs/workloads.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from adaptive_sarathi.workloads.arrivals import ArrivalProcess
from adaptive_sarathi.workloads.conversations import ConversationWorkload
from adaptive_sarathi.workloads.lengths import DISTRIBUTIONS, Fixed, LengthSource, SyntheticLengths, TraceLengths
from adaptive_sarathi.workloads.mix import Mix, MixComponent
from adaptive_sarathi.workloads.request import WorkloadError
from adaptive_sarathi.workloads.spec import Phase, WorkloadSpec
from adaptive_sarathi.workloads.traces import resolve_trace

# The example workloads of a source checkout (examples/workloads beside the package): bare names
# such as "chat" resolve there, so that `--workload chat` works from any directory.
EXAMPLE_WORKLOADS = Path(__file__).resolve().parents[2] / "examples" / "workloads"

_LENGTH_KEYS = {"trace", "synthetic", "max_prompt_tokens", "max_output_tokens", "max_total_len", "slo_class"}
_ARRIVAL_KEYS = {"qps", "duration_s", "num_requests", "cv"}
_PHASE_KEYS = _LENGTH_KEYS | _ARRIVAL_KEYS | {"mix"}
_COMPONENT_KEYS = _LENGTH_KEYS | {"share"}
_CONVERSATION_REQUIRED = ("num_conversations", "conversation_qps", "turns", "user_tokens", "output_tokens")
_CONVERSATION_DISTRIBUTIONS = ("turns", "user_tokens", "output_tokens")
_CONVERSATION_KEYS = set(_CONVERSATION_REQUIRED) | {"system_prompt_tokens", "num_system_prompts", "think_time_s",
                                                    "max_context_tokens", "slo_class"}


def load_workload(path: Path | str, seed: int = 0) -> WorkloadSpec | ConversationWorkload:
    """Parse a workload file. Raises WorkloadError ("<file>: <field>: <problem>: <fix>") on bad
    YAML or fields, FileNotFoundError when the file or a named trace is missing. `path` may
    also be the bare name of an example workload ("chat" or "chat.yaml" in EXAMPLE_WORKLOADS)."""
    path = resolve_workload(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise WorkloadError(f"{path}: not valid YAML ({err}): fix the syntax") from None
    try:
        return parse_workload(data, base_dir=path.parent, seed=seed)
    except WorkloadError as err:
        raise WorkloadError(f"{path}: {err}") from None


def resolve_workload(name_or_path: Path | str) -> Path:
    """The YAML file a workload argument names: an existing path, else for a bare name the file of
    that name in EXAMPLE_WORKLOADS (".yaml" added when it has no suffix). Raises FileNotFoundError
    saying where it looked and what exists."""
    path = Path(name_or_path).expanduser()
    candidates = [path]
    if path.parent == Path("."):
        candidates.append(EXAMPLE_WORKLOADS / (path.name if path.suffix else path.name + ".yaml"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    examples = sorted(p.stem for p in EXAMPLE_WORKLOADS.glob("*.yaml"))
    raise FileNotFoundError(f"workload {str(name_or_path)!r} not found (looked at "
                            f"{', '.join(str(c) for c in candidates)}): pass a YAML path"
                            + (f" or an example name ({', '.join(examples)})" if examples else ""))


def parse_workload(data: Any, base_dir: Path, seed: int = 0) -> WorkloadSpec | ConversationWorkload:
    """A WorkloadSpec (a `phases` document) or a ConversationWorkload (a `conversations` one) from
    the parsed YAML document (see the module docstring). Both offer generate(), scaled(),
    mean_qps and slo_classes."""
    if not isinstance(data, dict) or ("phases" in data) == ("conversations" in data):
        raise WorkloadError("the file must be a mapping with either a 'phases' list or a 'conversations' "
                            "mapping: see the format in adaptive_sarathi/workloads/yaml_file.py")
    if "conversations" in data:
        unknown = set(data) - {"conversations"}
        if unknown:
            raise WorkloadError(f"unknown top-level key(s) {sorted(unknown)}: a conversations file has only "
                                "'conversations'")
        return _field("conversations", _conversations, data["conversations"], seed)
    unknown = set(data) - {"phases"}
    if unknown:
        raise WorkloadError(f"unknown top-level key(s) {sorted(unknown)}: only 'phases' is allowed")
    phases = data["phases"]
    if not isinstance(phases, list) or not phases:
        raise WorkloadError("phases: must be a non-empty list of phases")
    return WorkloadSpec(tuple(_field(f"phases[{i}]", _phase, p, base_dir) for i, p in enumerate(phases)), seed)


def _conversations(data: Any, seed: int) -> ConversationWorkload:
    if not isinstance(data, dict):
        raise WorkloadError("must be a mapping such as {num_conversations: 400, conversation_qps: 1.0, turns: 4, "
                            "user_tokens: 200, output_tokens: 250}")
    unknown = set(data) - _CONVERSATION_KEYS
    if unknown:
        raise WorkloadError(f"unknown key(s) {sorted(unknown)}: use {', '.join(sorted(_CONVERSATION_KEYS))}")
    missing = [key for key in _CONVERSATION_REQUIRED if key not in data]
    if missing:
        raise WorkloadError(f"{', '.join(missing)}: missing: a conversations workload needs "
                            f"{', '.join(_CONVERSATION_REQUIRED)}")
    fields = dict(data)
    for key in _CONVERSATION_DISTRIBUTIONS:
        fields[key] = _field(key, _distribution, data[key])
    return ConversationWorkload(**fields, seed=seed)  # it names a bad value and the fix


def _phase(data: Any, base_dir: Path) -> Phase:
    if not isinstance(data, dict):
        raise WorkloadError("must be a mapping such as {trace: sharegpt_8k, qps: 2.0, duration_s: 300}")
    unknown = set(data) - _PHASE_KEYS
    if unknown:
        raise WorkloadError(f"unknown key(s) {sorted(unknown)}: use {', '.join(sorted(_PHASE_KEYS))}")
    if "qps" not in data:
        raise WorkloadError("qps: missing: give the phase's mean request rate, e.g. qps: 2.0")
    arrivals = ArrivalProcess(data["qps"], data.get("cv", 1.0))
    if "mix" in data:
        misplaced = sorted(set(data) & _LENGTH_KEYS)
        if misplaced:
            raise WorkloadError(f"{', '.join(misplaced)}: a mix phase takes these per component: move them into "
                                "the entries under mix")
        return Phase(_field("mix", _mix, data["mix"], base_dir), arrivals, duration_s=data.get("duration_s"),
                     num_requests=data.get("num_requests"))
    return Phase(_lengths(data, base_dir, "phase"), arrivals, duration_s=data.get("duration_s"),
                 num_requests=data.get("num_requests"), max_prompt_tokens=data.get("max_prompt_tokens"),
                 max_output_tokens=data.get("max_output_tokens"), slo_class=data.get("slo_class"))


def _mix(data: Any, base_dir: Path) -> Mix:
    if not isinstance(data, list) or not data:
        raise WorkloadError("must be a non-empty list of components such as "
                            "[{trace: sharegpt_8k, share: 3, slo_class: interactive}, ...]")
    return Mix(tuple(_field(f"[{i}]", _component, c, base_dir) for i, c in enumerate(data)))


def _component(data: Any, base_dir: Path) -> MixComponent:
    if not isinstance(data, dict):
        raise WorkloadError("must be a mapping such as {trace: sharegpt_8k, share: 1, slo_class: interactive}")
    unknown = set(data) - _COMPONENT_KEYS
    if unknown:
        raise WorkloadError(f"unknown key(s) {sorted(unknown)}: a component takes "
                            f"{', '.join(sorted(_COMPONENT_KEYS))} (arrivals are the phase's)")
    if "share" not in data:
        raise WorkloadError("share: missing: give the component's share of the arrivals, a number > 0 "
                            "(shares are normalized), e.g. share: 1")
    return MixComponent(_lengths(data, base_dir, "component"), data["share"], data.get("slo_class"),
                        data.get("max_prompt_tokens"), data.get("max_output_tokens"))


def _lengths(data: dict, base_dir: Path, what: str) -> LengthSource:
    """The trace or synthetic lengths of a phase or mix component (`what` names it in errors)."""
    if ("trace" in data) == ("synthetic" in data):
        raise WorkloadError("needs exactly one of 'trace' and 'synthetic' for its request lengths"
                            + (" (or a 'mix' of components)" if what == "phase" else ""))
    if "trace" in data:
        return _field("trace", lambda v: TraceLengths(resolve_trace(str(v), base_dir), data.get("max_total_len")),
                      data["trace"])
    if "max_total_len" in data:
        raise WorkloadError(f"max_total_len: only for trace {what}s; cap synthetic lengths with "
                            "max_prompt_tokens and max_output_tokens")
    return _field("synthetic", _synthetic, data["synthetic"])


def _synthetic(data: Any) -> SyntheticLengths:
    if not isinstance(data, dict) or set(data) != {"prompt", "output"}:
        raise WorkloadError("must be a mapping with exactly 'prompt' and 'output' distributions")
    return SyntheticLengths(_field("prompt", _distribution, data["prompt"]),
                            _field("output", _distribution, data["output"]))


def _distribution(data: Any):
    if isinstance(data, int) and not isinstance(data, bool):
        return Fixed(data)
    if not isinstance(data, dict) or data.get("dist") not in DISTRIBUTIONS:
        raise WorkloadError(f"must be an integer or a mapping with dist: one of {', '.join(DISTRIBUTIONS)}")
    params = {k: v for k, v in data.items() if k != "dist"}
    cls = DISTRIBUTIONS[data["dist"]]
    try:
        return cls(**params)
    except TypeError:
        fields = ", ".join(cls.__dataclass_fields__)
        raise WorkloadError(f"dist {data['dist']} takes {fields}; got {sorted(params)}") from None


def _field(name: str, parse, value: Any, *args):
    """parse(value, *args), prefixing any WorkloadError with the field's path."""
    try:
        return parse(value, *args)
    except WorkloadError as err:
        raise WorkloadError(f"{name}: {err}") from None
