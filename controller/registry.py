"""Build a budget policy from a short spec string (what --policy takes)."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from adaptive_sarathi.controller.adaptive import AdaptiveBudget, steady_latency_model
from adaptive_sarathi.engine.budget import BudgetPolicy, FixedBudget
from adaptive_sarathi.controller.slack import SlackBudget
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.controller.two_level import TwoLevelBudget
from adaptive_sarathi.engine.latency.shape import LatencyModel

# The adaptive policy's tunable hyperparameters (what a seed file may set).
ADAPTIVE_PARAMS = tuple(p for p in inspect.signature(AdaptiveBudget.__init__).parameters
                        if p not in ("self", "slo", "latency_model", "seed"))
POLICY_SPECS = ("fixed:<budget>[:<chunk>][:edf]", "adaptive", "two_level[:<low>:<high>]", "slack")


class PolicySpecError(ValueError):
    """A policy spec that names no policy or has bad arguments; the message names the spec and the
    choices."""


def _fail(spec: str, problem: str) -> PolicySpecError:
    return PolicySpecError(f"policy {spec!r}: {problem}; choose one of {', '.join(POLICY_SPECS)}")


def _ints(spec: str, args: list[str], usage: str) -> list[int]:
    try:
        values = [int(a) for a in args]
    except ValueError:
        raise _fail(spec, f"arguments must be whole numbers of tokens, e.g. {usage}") from None
    if any(v < 1 for v in values):
        raise _fail(spec, f"token counts must be >= 1, e.g. {usage}")
    return values


def make_policy(spec: str, slo: SLOPolicy | None = None, prior: LatencyModel | None = None,
                seed: int = 0, params: Mapping[str, Any] | None = None) -> BudgetPolicy:
    """A fresh policy for `spec`:
      fixed:<budget>[:<chunk>][:edf]   the same budget every step (Sarathi-Serve as published);
                                 edf: admit requests by the SLO's TTFT deadlines instead of FCFS
      adaptive                   AdaptiveBudget over an OnlineLatencyModel with `prior` (steady_latency_model)
      two_level[:<low>:<high>]   TwoLevelBudget (defaults from the SLO's bounds)
      slack                      SlackBudget with `prior` as its offline model (else fitted)
    `params` overrides adaptive's constructor hyperparameters (e.g. from a seed file); other
    policies ignore it. Every policy but fixed needs `slo`; with an SLO, a fixed budget must lie within its bounds.
    Raises PolicySpecError (a ValueError) naming the spec, the problem and the choices."""
    name, *args = spec.strip().split(":")
    if name == "fixed":
        edf = bool(args) and args[-1] == "edf"
        if edf:
            args = args[:-1]
            if slo is None:
                raise _fail(spec, "edf orders requests by their SLO deadlines: pass --slo-policy NAME|FILE or --slo")
        if len(args) not in (1, 2):
            raise _fail(spec, "fixed takes a budget, an optional chunk and an optional edf, e.g. fixed:512, "
                              "fixed:512:256 or fixed:512:edf")
        budget, *chunk = _ints(spec, args, "fixed:512")
        if slo is not None and not slo.bounds.min_token_budget <= budget <= slo.bounds.max_token_budget:
            raise _fail(spec, f"budget {budget} is outside SLO policy {slo.name!r}'s bounds "
                              f"[{slo.bounds.min_token_budget}, {slo.bounds.max_token_budget}]: pick one inside "
                              "them or widen budget.min_token_budget/max_token_budget")
        if slo is not None and chunk and not slo.bounds.min_chunk <= chunk[0] <= slo.bounds.max_chunk:
            raise _fail(spec, f"chunk {chunk[0]} is outside SLO policy {slo.name!r}'s chunk bounds "
                              f"[{slo.bounds.min_chunk}, {slo.bounds.max_chunk}]: pick one inside them")
        return FixedBudget(budget, chunk[0] if chunk else None, seed=seed, deadlines=slo.as_targets() if edf else None)
    if name not in ("adaptive", "two_level", "slack"):
        raise _fail(spec, f"unknown policy {name!r}")
    if slo is None:
        raise _fail(spec, f"{name} needs an SLO policy: pass --slo-policy NAME|FILE or --slo ttft:MS,tbt:MS")
    if name == "two_level":
        if len(args) not in (0, 2):
            raise _fail(spec, "two_level takes no arguments or a low and a high budget, e.g. two_level:512:2048")
        low, high = _ints(spec, args, "two_level:512:2048") if args else (None, None)
        try:
            return TwoLevelBudget(slo, low, high, seed=seed)
        except ValueError as e:
            raise _fail(spec, str(e)) from None
    if args:
        raise _fail(spec, f"{name} takes no arguments")
    if name == "adaptive":
        try:
            return AdaptiveBudget(slo, steady_latency_model(prior, slo.bounds.tile_tokens), seed=seed,
                                  **dict(params or {}))
        except TypeError as e:  # an unknown hyperparameter name
            raise _fail(spec, f"{e}; known hyperparameters: {', '.join(ADAPTIVE_PARAMS)}") from None
    return SlackBudget(slo, prior, seed=seed)
