"""Seed files: tuned starting hyperparameters for a budget policy, per GPU, model and TP size.

A seed file is a small YAML (or JSON, which YAML reads too) written by `adaptive-sarathi tune`:

    seeds:
      - gpu: h100
        model: llama-3-8b
        tensor_parallel_size: 1
        policy: adaptive
        params: {margin: 0.05}
        objective: capacity_qps       # what the tuner maximised, and the value it reached
        value: 18.6
        workload: sharegpt_8k
        slo: llama-3-8b-h100-strict

`lookup` picks the entry for a deployment; `make_policy(..., params=entry.params)` starts the
policy from it. Every validation error names the file, the entry, the field and the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adaptive_sarathi.controller.registry import ADAPTIVE_PARAMS

SEED_POLICIES = ("adaptive", "fixed")
FIXED_PARAMS = ("token_budget", "max_chunk")
# Names older seed files may hold that are deployment facts, not hyperparameters: the policy now
# reads them from the engine state. Refused with a message saying so, rather than silently
# dropped, so that nobody believes a seed file still sets them.
DEPLOYMENT_FACTS = {"block_tokens": "the engine's --block-size", "kv_watermark": "SchedulerConfig.watermark"}


class SeedFileError(ValueError):
    """A seed file that cannot be read or does not validate; the message names the field and the fix."""


@dataclass(frozen=True)
class SeedEntry:
    """Tuned parameters for one deployment (GPU, model, tensor-parallel size) and policy.
    `objective` / `value` record what the tuner maximised and the best value it measured."""

    gpu: str
    model: str
    policy: str
    params: dict[str, Any]
    tensor_parallel_size: int = 1
    objective: str = ""
    value: float | None = None
    workload: str = ""
    slo: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.gpu.lower(), self.model.lower(), self.tensor_parallel_size, self.policy)


def _entry(raw: Any, where: str) -> SeedEntry:
    if not isinstance(raw, dict):
        raise SeedFileError(f"{where}: each entry under 'seeds' must be a mapping with gpu, model, policy and params")
    for name in ("gpu", "model", "policy"):
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise SeedFileError(f"{where}: field '{name}' is missing or not a string: set it, e.g. "
                                + {"gpu": "gpu: h100", "model": "model: llama-3-8b", "policy": "policy: adaptive"}[name])
    policy = raw["policy"]
    if policy not in SEED_POLICIES:
        raise SeedFileError(f"{where}: field 'policy' is {policy!r}: use one of {', '.join(SEED_POLICIES)}")
    tp = raw.get("tensor_parallel_size", 1)
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise SeedFileError(f"{where}: field 'tensor_parallel_size' is {tp!r}: use an integer >= 1 (1 for one GPU)")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise SeedFileError(f"{where}: field 'params' must be a mapping of hyperparameter names to values")
    facts = sorted(set(params) & set(DEPLOYMENT_FACTS))
    if facts:
        raise SeedFileError(f"{where}: params {', '.join(facts)} are deployment facts, not tunable: the policy reads "
                            f"them from the engine ({', '.join(DEPLOYMENT_FACTS[f] for f in facts)}); delete them "
                            "from the seed file")
    known = ADAPTIVE_PARAMS if policy == "adaptive" else FIXED_PARAMS
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SeedFileError(f"{where}: field 'params' has unknown name(s) {', '.join(unknown)} for policy {policy!r}: "
                            f"use only {', '.join(known)}")
    for name, value in params.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SeedFileError(f"{where}: params.{name} is {value!r}: use a number")
    if policy == "fixed" and not isinstance(params.get("token_budget"), int):
        raise SeedFileError(f"{where}: params.token_budget is required for a fixed seed: set a whole number of tokens")
    value = raw.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise SeedFileError(f"{where}: field 'value' is {value!r}: use a number or leave it out")
    known_fields = {"gpu", "model", "policy", "params", "tensor_parallel_size", "objective", "value", "workload", "slo"}
    return SeedEntry(gpu=raw["gpu"].strip(), model=raw["model"].strip(), policy=policy, params=dict(params),
                     tensor_parallel_size=tp, objective=str(raw.get("objective", "")),
                     value=None if value is None else float(value), workload=str(raw.get("workload", "")),
                     slo=str(raw.get("slo", "")), extra={k: v for k, v in raw.items() if k not in known_fields})


def load_seeds(path: str | Path) -> list[SeedEntry]:
    """Every entry of a seed file. Raises SeedFileError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise SeedFileError(f"seed file {path} not found: pass the file `adaptive-sarathi tune --out` wrote")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SeedFileError(f"seed file {path} is not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("seeds"), list):
        raise SeedFileError(f"seed file {path}: the top level must be a mapping with a list under 'seeds'")
    entries = [_entry(raw, f"seed file {path}, seeds[{i}]") for i, raw in enumerate(data["seeds"])]
    keys = [e.key for e in entries]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise SeedFileError(f"seed file {path}: two entries for gpu={dup[0]}, model={dup[1]}, "
                            f"tensor_parallel_size={dup[2]}, policy={dup[3]}: keep one")
    return entries


def save_seed(path: str | Path, entry: SeedEntry) -> None:
    """Write `entry` into the seed file at `path` (created if absent), replacing an entry with the
    same gpu, model, tensor_parallel_size and policy; other entries are kept."""
    path = Path(path)
    entries = load_seeds(path) if path.is_file() else []
    entries = [e for e in entries if e.key != entry.key] + [entry]
    rows = []
    for e in entries:
        row = {k: v for k, v in asdict(e).items() if k != "extra" and v not in ("", None)}
        row.update(e.extra)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"seeds": rows}, sort_keys=False))


def lookup(entries: list[SeedEntry], gpu: str | None = None, model: str | None = None,
           tensor_parallel_size: int = 1, policy: str = "adaptive") -> SeedEntry | None:
    """The entry for this deployment and policy; gpu/model None match any. With several matches
    the first is returned; None when nothing matches (callers fall back to the defaults)."""
    for e in entries:
        if (e.policy == policy and e.tensor_parallel_size == tensor_parallel_size
                and (gpu is None or e.gpu.lower() == gpu.lower())
                and (model is None or e.model.lower() == model.lower())):
            return e
    return None


def seed_params(path: str | Path | None, gpu: str | None = None, model: str | None = None,
                tensor_parallel_size: int = 1, policy: str = "adaptive") -> dict[str, Any] | None:
    """The tuned params for this deployment from the seed file at `path`; None when `path` is None
    or has no matching entry (start from the defaults). Raises SeedFileError for a bad file."""
    if path is None:
        return None
    entry = lookup(load_seeds(path), gpu, model, tensor_parallel_size, policy)
    return None if entry is None else dict(entry.params)
