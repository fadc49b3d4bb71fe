"""SLO policies: latency targets, budget bounds and request classes, loaded from YAML or a shorthand.

A policy file looks like this (every key under `budget` and `classes` is optional):

    name: llama-3-8b-h100-strict
    description: free text
    slo:
      ttft: {target_ms: 2000, percentile: 90}
      tbt: {target_ms: 70, percentile: 99}
    budget:
      min_token_budget: 128
      max_token_budget: 8192
      min_chunk: 64
      max_chunk: 8192
      fallback_token_budget: 512
      tile_tokens: 128
    classes:
      interactive: {ttft: {target_ms: 1000, percentile: 90}}
      batch: {ttft: {target_ms: 30000, percentile: 90}, tbt: {target_ms: 500, percentile: 99}}
    default_class: interactive

A class that omits a target inherits the top-level one. `default_class` (optional) names the
declared class of requests that name none; without it they get the top-level targets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from adaptive_sarathi.engine.slo_targets import SloTargets

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEFAULT_FALLBACK_BUDGET = 512  # Sarathi-Serve's choice for strict SLOs


class UnknownSLOClassError(ValueError):
    """A request named a class its SLO policy does not declare. `class_name` is the name given,
    `known` the policy's class names (empty when it declares none)."""

    def __init__(self, class_name: str, policy_name: str, known: tuple[str, ...]):
        self.class_name = class_name
        self.policy_name = policy_name
        self.known = known
        choices = f"use one of {', '.join(known)}" if known else "it declares no classes: send none"
        super().__init__(f"request class {class_name!r} is not in SLO policy {policy_name!r}: {choices}")


class SLOPolicyError(ValueError):
    """An invalid SLO policy. `field` is the dotted path of the bad value (e.g. `slo.tbt.target_ms`)
    and the message says how to fix it; `source` names the file or flag it came from."""

    def __init__(self, field: str, message: str, source: str = ""):
        self.field = field
        self.detail = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}")

    def within(self, prefix: str, source: str | None = None) -> "SLOPolicyError":
        """The same error with `prefix.` put before its field (and `source` set, when given)."""
        path = f"{prefix}.{self.field}" if prefix else self.field
        return SLOPolicyError(path, self.detail, self.source if source is None else source)


def _number(value: Any, field: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SLOPolicyError(field, f"got {value!r}; use a finite number, e.g. `{example}`")
    return float(value)


def _integer(value: Any, field: str, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SLOPolicyError(field, f"got {value!r}; use a whole number of tokens >= 1, e.g. `{example}`")
    return value


@dataclass(frozen=True)
class LatencyTarget:
    """`percentile`% of samples must be <= `target_ms` milliseconds."""

    target_ms: float
    percentile: float = 99.0

    def __post_init__(self) -> None:
        if _number(self.target_ms, "target_ms", "target_ms: 100") <= 0:
            raise SLOPolicyError("target_ms", f"got {self.target_ms!r}; use milliseconds > 0, e.g. `target_ms: 100`")
        p = _number(self.percentile, "percentile", "percentile: 99")
        if not 0 < p <= 100:
            raise SLOPolicyError("percentile",
                                 f"got {self.percentile!r}; use a percent in (0, 100], e.g. `percentile: 99`")

    @property
    def target_s(self) -> float:
        return self.target_ms / 1000.0

    @property
    def quantile(self) -> float:
        """The percentile as a fraction in (0, 1]."""
        return self.percentile / 100.0


@dataclass(frozen=True)
class BudgetBounds:
    """Limits every budget policy keeps, in tokens. max_chunk None = max_token_budget;
    fallback_token_budget (the budget used when a learning policy is unsure) None = 512 clamped
    into [min_token_budget, max_token_budget]. tile_tokens: the spacing of the budgets a policy
    tries, the hardware's GEMM tile (128 on H100) so no budget pays for a partly filled tile."""

    min_token_budget: int = 64
    max_token_budget: int = 8192
    min_chunk: int = 32
    max_chunk: int | None = None
    fallback_token_budget: int | None = None
    tile_tokens: int = 128

    def __post_init__(self) -> None:
        lo = _integer(self.min_token_budget, "min_token_budget", "min_token_budget: 64")
        hi = _integer(self.max_token_budget, "max_token_budget", "max_token_budget: 8192")
        if lo > hi:
            raise SLOPolicyError("min_token_budget",
                                 f"{lo} exceeds max_token_budget={hi}; lower it or raise max_token_budget")
        if self.max_chunk is None:
            object.__setattr__(self, "max_chunk", hi)
        chunk_hi = _integer(self.max_chunk, "max_chunk", "max_chunk: 2048")
        chunk_lo = _integer(self.min_chunk, "min_chunk", "min_chunk: 32")
        if chunk_hi > hi:
            raise SLOPolicyError("max_chunk", f"{chunk_hi} exceeds max_token_budget={hi}; a chunk never exceeds "
                                              f"the step's budget, so use at most {hi}")
        if chunk_lo > chunk_hi:
            raise SLOPolicyError("min_chunk", f"{chunk_lo} exceeds max_chunk={chunk_hi}; lower it or raise max_chunk")
        if self.fallback_token_budget is None:
            object.__setattr__(self, "fallback_token_budget", min(max(_DEFAULT_FALLBACK_BUDGET, lo), hi))
        fallback = _integer(self.fallback_token_budget, "fallback_token_budget", "fallback_token_budget: 512")
        if not lo <= fallback <= hi:
            raise SLOPolicyError("fallback_token_budget", f"{fallback} is outside [min_token_budget={lo}, "
                                                          f"max_token_budget={hi}]; pick a budget inside the bounds")
        _integer(self.tile_tokens, "tile_tokens", "tile_tokens: 128")

    def clamp_budget(self, tokens: int) -> int:
        return min(max(tokens, self.min_token_budget), self.max_token_budget)

    def clamp_chunk(self, tokens: int) -> int:
        return min(max(tokens, self.min_chunk), self.max_chunk)


@dataclass(frozen=True)
class RequestClass:
    """Targets of one class of requests (e.g. interactive, batch); unspecified ones are inherited."""

    name: str
    ttft: LatencyTarget
    tbt: LatencyTarget


@dataclass(frozen=True)
class SLOPolicy:
    """Declared latency targets and the bounds budget policies stay within.

    Policies that budget one step for every request in flight use the tightest target over the
    default and every class (`tightest_tbt`, `tightest_ttft`): a step's decodes may belong to any
    class.
    """

    name: str
    ttft: LatencyTarget
    tbt: LatencyTarget
    bounds: BudgetBounds = field(default_factory=BudgetBounds)
    classes: tuple[RequestClass, ...] = ()
    description: str = ""
    default_class: str | None = None  # the class of requests that name none; None: top-level targets

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SLOPolicyError("name", f"got {self.name!r}; use letters, digits, '.', '_' or '-', "
                                         "e.g. `name: llama-3-8b-h100-strict`")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise SLOPolicyError("classes", f"class names repeat ({names}); give each class its own name")
        if self.default_class is not None and self.default_class not in names:
            declared = f"one of {', '.join(names)}" if names else "a class declared under `classes:` (none is)"
            raise SLOPolicyError("default_class", f"got {self.default_class!r}, which is not a declared class; "
                                                  f"use {declared}, or remove default_class")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The declared classes' names, in file order."""
        return tuple(c.name for c in self.classes)

    def resolve_class(self, class_name: str | None) -> str | None:
        """The class a request is served to: `class_name` when the policy declares it, the
        default_class for None (itself None when the policy has none: the top-level targets).
        Raises UnknownSLOClassError (naming the known classes) for any other name."""
        if class_name is None:
            return self.default_class
        if class_name not in self.class_names:
            raise UnknownSLOClassError(class_name, self.name, self.class_names)
        return class_name

    @property
    def tightest_tbt(self) -> LatencyTarget:
        return _tightest([self.tbt, *(c.tbt for c in self.classes)])

    @property
    def tightest_ttft(self) -> LatencyTarget:
        return _tightest([self.ttft, *(c.ttft for c in self.classes)])

    def as_targets(self) -> SloTargets:
        """The policy's targets as plain seconds: the top-level ones and each class's (targets_for,
        so a class inherits what it leaves out); what simulations judge and the engine's request
        deadlines follow."""

        def plain(ttft: LatencyTarget, tbt: LatencyTarget) -> SloTargets:
            return SloTargets(ttft_s=ttft.target_s, tbt_s=tbt.target_s, ttft_percentile=ttft.percentile,
                              tbt_percentile=tbt.percentile)

        top = plain(*self.targets_for(None))
        return SloTargets(top.ttft_s, top.tbt_s, top.ttft_percentile, top.tbt_percentile,
                          classes={c.name: plain(*self.targets_for(c.name)) for c in self.classes})

    def targets_for(self, class_name: str | None) -> tuple[LatencyTarget, LatencyTarget]:
        """(ttft, tbt) of the class `class_name`; the top-level targets for None. Raises KeyError
        naming the known classes for an unknown name."""
        if class_name is None:
            return self.ttft, self.tbt
        for c in self.classes:
            if c.name == class_name:
                return c.ttft, c.tbt
        raise KeyError(f"request class {class_name!r} is not in SLO policy {self.name!r}: "
                       f"use one of {[c.name for c in self.classes]}")

    def to_dict(self) -> dict[str, Any]:
        """The policy as a document of the YAML schema (plain dicts, strs and numbers): every
        bound and every class target written out, so policy_from_dict(to_dict()) == self."""

        def target(t: LatencyTarget) -> dict[str, float]:
            return {"target_ms": t.target_ms, "percentile": t.percentile}

        b = self.bounds
        doc: dict[str, Any] = {
            "name": self.name, "description": self.description,
            "slo": {"ttft": target(self.ttft), "tbt": target(self.tbt)},
            "budget": {"min_token_budget": b.min_token_budget, "max_token_budget": b.max_token_budget,
                       "min_chunk": b.min_chunk, "max_chunk": b.max_chunk,
                       "fallback_token_budget": b.fallback_token_budget, "tile_tokens": b.tile_tokens},
            "classes": {c.name: {"ttft": target(c.ttft), "tbt": target(c.tbt)} for c in self.classes},
        }
        if self.default_class is not None:
            doc["default_class"] = self.default_class
        return doc

    @classmethod
    def from_shorthand(cls, text: str, bounds: BudgetBounds | None = None) -> "SLOPolicy":
        """Parse the CLI shorthand `ttft:MS,tbt:MS`, each target optionally `@pNN` (default p99),
        e.g. `ttft:2000@p90,tbt:100`. Raises SLOPolicyError naming the bad part."""
        targets = parse_targets(text)
        for key in ("ttft", "tbt"):
            if key not in targets:
                raise SLOPolicyError(key, "is missing; give both targets, e.g. --slo ttft:2000,tbt:100",
                                     f"--slo {text!r}")
        return cls(name="cli", ttft=targets["ttft"], tbt=targets["tbt"], bounds=bounds or BudgetBounds(),
                   description=f"from --slo {text}")


def parse_targets(text: str, keys: tuple[str, ...] = ("ttft", "tbt")) -> dict[str, LatencyTarget]:
    """The `--slo` shorthand's targets: comma-separated `KEY:MS`, each optionally `@pNN` (default
    p99), with KEY among `keys`; any subset of the keys may be given. Raises SLOPolicyError naming
    the bad part (an unknown key, a repeated key, a bad number or percentile)."""
    source = f"--slo {text!r}"
    targets: dict[str, LatencyTarget] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition(":")
        if not sep or key not in keys:
            written = " or ".join(f"`{k}:MS`" for k in keys)
            raise SLOPolicyError(key or part, f"cannot read {part!r}; write {written}, "
                                              "e.g. --slo ttft:2000,tbt:100", source)
        if key in targets:
            raise SLOPolicyError(key, f"{key} is given twice; give it once", source)
        ms, at, pct = value.partition("@")
        try:
            target_ms = float(ms)
            percentile = float(pct.removeprefix("p")) if at else 99.0
        except ValueError:
            raise SLOPolicyError(key, f"cannot read {value!r}; write milliseconds with an optional "
                                      f"percentile, e.g. `{key}:100` or `{key}:100@p99`", source) from None
        try:
            targets[key] = LatencyTarget(target_ms, percentile)
        except SLOPolicyError as e:
            raise e.within(key, source) from None
    return targets


def _tightest(targets: list[LatencyTarget]) -> LatencyTarget:
    return min(targets, key=lambda t: (t.target_ms, -t.percentile))


# -- YAML ----------------------------------------------------------------------------------------

_TOP_KEYS = {"name": True, "description": False, "slo": True, "budget": False, "classes": False,
             "default_class": False}
_SLO_KEYS = {"ttft": True, "tbt": True}
_TARGET_KEYS = {"target_ms": True, "percentile": False}
_BUDGET_KEYS = {k: False for k in ("min_token_budget", "max_token_budget", "min_chunk", "max_chunk",
                                   "fallback_token_budget", "tile_tokens")}
_CLASS_KEYS = {"ttft": False, "tbt": False, "description": False}


def _mapping(value: Any, path: str, keys: dict[str, bool]) -> dict[str, Any]:
    """`value` as a dict whose keys are among `keys` (those mapped to True are required)."""
    if not isinstance(value, dict):
        raise SLOPolicyError(path or "(top level)", f"got {type(value).__name__} {value!r}; write a mapping "
                                                    f"with keys {', '.join(keys)}")
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in keys:
            raise SLOPolicyError(f"{prefix}{key}", f"is not a known key; use one of {', '.join(keys)}")
    for key, required in keys.items():
        if required and key not in value:
            raise SLOPolicyError(f"{prefix}{key}", "is missing; add it (see adaptive_sarathi/slo_policies/ "
                                                   "for complete examples)")
    return value


def _target(value: Any, path: str) -> LatencyTarget:
    d = _mapping(value, path, _TARGET_KEYS)
    try:
        return LatencyTarget(**d)
    except SLOPolicyError as e:
        raise e.within(path) from None


def policy_from_dict(data: Any, source: str = "") -> SLOPolicy:
    """Build and validate an SLOPolicy from parsed YAML; `data` is not mutated. Raises
    SLOPolicyError whose field is the YAML path of the first bad value."""
    try:
        top = _mapping(data, "", _TOP_KEYS)
        slo = _mapping(top["slo"], "slo", _SLO_KEYS)
        ttft, tbt = _target(slo["ttft"], "slo.ttft"), _target(slo["tbt"], "slo.tbt")
        budget = _mapping(top.get("budget", {}), "budget", _BUDGET_KEYS)
        try:
            bounds = BudgetBounds(**budget)
        except SLOPolicyError as e:
            raise e.within("budget") from None
        raw_classes = top.get("classes") or {}
        if not isinstance(raw_classes, dict):
            raise SLOPolicyError("classes", f"got {type(raw_classes).__name__}; write a mapping from class name "
                                            "to its targets, e.g. `interactive: {ttft: {target_ms: 1000}}`")
        classes = []
        for name, spec in raw_classes.items():
            path = f"classes.{name}"
            if not isinstance(name, str) or not _NAME.match(name):
                raise SLOPolicyError(path, "use a class name of letters, digits, '.', '_' or '-'")
            d = _mapping(spec, path, _CLASS_KEYS)
            if "ttft" not in d and "tbt" not in d:
                raise SLOPolicyError(path, "sets no target; give it ttft and/or tbt, or remove the class")
            classes.append(RequestClass(
                name, _target(d["ttft"], f"{path}.ttft") if "ttft" in d else ttft,
                _target(d["tbt"], f"{path}.tbt") if "tbt" in d else tbt))
        description = top.get("description", "")
        if not isinstance(description, str):
            raise SLOPolicyError("description", f"got {description!r}; write free text or remove it")
        default_class = top.get("default_class")
        if default_class is not None and not isinstance(default_class, str):
            raise SLOPolicyError("default_class", f"got {default_class!r}; write the name of a class declared "
                                                  "under `classes:`")
        return SLOPolicy(top["name"], ttft, tbt, bounds, tuple(classes), description, default_class)
    except SLOPolicyError as e:
        raise e.within("", source) from None


def shipped_policies_dir() -> Path:
    """The folder of the example policies installed with the package."""
    return Path(str(resources.files("adaptive_sarathi") / "slo_policies"))


def shipped_policy_names() -> list[str]:
    return sorted(p.stem for p in shipped_policies_dir().glob("*.yaml"))


def load_slo_policy(path_or_name: str | Path) -> SLOPolicy:
    """Load a policy from a YAML file, or a shipped example by bare name (e.g. `smollm2-cpu-strict`).
    Raises SLOPolicyError naming the field (or the file, for a missing file or bad YAML syntax)."""
    text = str(path_or_name)
    path = Path(text)
    is_path = path.suffix in (".yaml", ".yml") or "/" in text or path.exists()
    if not is_path:
        path = shipped_policies_dir() / f"{text}.yaml"
        if not path.exists():
            raise SLOPolicyError("name", f"no shipped SLO policy is called {text!r}; use one of "
                                         f"{', '.join(shipped_policy_names())} or a path to a YAML file", text)
    if not path.is_file():
        raise SLOPolicyError("file", "does not exist; check the path", text)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SLOPolicyError("file", f"is not valid YAML{where} ({getattr(e, 'problem', e)}); fix the syntax",
                             str(path)) from None
    return policy_from_dict(data, str(path))


def slo_from_flags(shorthand: str | None, policy_file: str | None) -> SLOPolicy | None:
    """The SLO given on a command line as `--slo ttft:MS,tbt:MS` or `--slo-policy FILE|NAME`
    (at most one of them), or None. Raises ValueError when both are given or either is invalid."""
    if shorthand is not None and policy_file is not None:
        raise ValueError("give --slo or --slo-policy, not both")
    if shorthand is not None:
        return SLOPolicy.from_shorthand(shorthand)
    return load_slo_policy(policy_file) if policy_file is not None else None
