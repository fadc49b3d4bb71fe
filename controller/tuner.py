"""Offline tuner: an Optuna study over a budget policy's hyperparameters.

The study (TPE sampler, seeded) proposes constructor hyperparameters for the adaptive policy (or,
as a baseline, a fixed budget and chunk), scores them with the caller's objective and keeps the
best. The defaults are always evaluated first (trial 0), so the result is never worse than
starting from the defaults on the objective as measured.

The objective is a callable built by the service layer (adaptive_sarathi.tuning builds one that
runs a scenario in the simulator): the controller imports nothing from the service layer. Only
hyperparameters are searched; deployment facts (block size, KV watermark) come from the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from adaptive_sarathi.controller.slo import SLOPolicy

# (make_policy spec, adaptive params or None) -> objective value, higher is better.
Objective = Callable[[str, "dict[str, Any] | None"], float]

TUNABLE_POLICIES = ("adaptive", "fixed")

# name -> (low, high, log scale, integer). Ranges bracket the defaults with room on both sides.
ADAPTIVE_SPACE: dict[str, tuple[float, float, bool, bool]] = {
    "margin": (0.0, 0.2, False, False),
    "knee_slack": (0.0, 0.6, False, False),
}


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated parameter set and its objective value (higher is better)."""

    number: int
    params: dict[str, Any]
    value: float


@dataclass(frozen=True)
class TuneResult:
    """The best parameters found. `default_value` is the objective with the policy's defaults
    (trial 0); `best_value` >= it by construction, both measured the same way."""

    policy: str
    objective: str
    best_params: dict[str, Any]
    best_value: float
    default_params: dict[str, Any]
    default_value: float
    trials: tuple[TrialRecord, ...]

    @property
    def improvement(self) -> float:
        """best_value / default_value (NaN when the default scored 0)."""
        return self.best_value / self.default_value if self.default_value > 0 else math.nan


def policy_spec(policy: str, params: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The (make_policy spec, adaptive params) pair a trial's params stand for."""
    if policy == "fixed":
        chunk = params.get("max_chunk")
        return (f"fixed:{params['token_budget']}" + (f":{chunk}" if chunk else "")), None
    return "adaptive", dict(params)


def default_params(slo: SLOPolicy, policy: str) -> dict[str, Any]:
    """The starting point: the adaptive policy's constructor defaults over the tuned names, or the
    SLO policy's fallback budget for fixed."""
    if policy == "fixed":
        return {"token_budget": slo.bounds.fallback_token_budget, "max_chunk": None}
    from adaptive_sarathi.controller.adaptive import AdaptiveBudget

    defaults = AdaptiveBudget(slo).get_params()
    return {name: defaults[name] for name in ADAPTIVE_SPACE}


def _suggest(trial, slo: SLOPolicy, policy: str) -> dict[str, Any]:
    if policy == "fixed":
        bounds = slo.bounds
        tile = bounds.tile_tokens
        budgets = sorted({b for b in (bounds.min_token_budget, bounds.max_token_budget,
                                      *range(tile, bounds.max_token_budget, tile))
                          if bounds.min_token_budget <= b <= bounds.max_token_budget})
        budget = trial.suggest_categorical("token_budget", budgets)
        return {"token_budget": budget, "max_chunk": None}
    params = {}
    for name, (low, high, log, integer) in ADAPTIVE_SPACE.items():
        if integer:
            params[name] = trial.suggest_int(name, int(low), int(high), log=log)
        else:
            params[name] = trial.suggest_float(name, low, high, log=log)
    return params


def tune(objective: Objective, slo: SLOPolicy, *, policy: str = "adaptive", objective_name: str = "objective",
         trials: int = 20, seed: int = 0, progress: bool = False,
         on_trial: Callable[[TrialRecord], None] | None = None) -> TuneResult:
    """Run a seeded TPE study of `trials` trials (the first is the defaults) and return the best.

    Each trial calls `objective(spec, adaptive_params)` once (see policy_spec); `slo` gives the
    fixed budget's ladder and the adaptive defaults; `objective_name` labels the result. Raises
    ValueError naming the argument for an unknown policy or fewer than 1 trial; what `objective`
    raises propagates.
    """
    import optuna

    if policy not in TUNABLE_POLICIES:
        raise ValueError(f"policy={policy!r} cannot be tuned: use one of {', '.join(TUNABLE_POLICIES)}")
    if trials < 1:
        raise ValueError(f"trials={trials!r} is invalid: use at least 1 (the first trial is the defaults)")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    defaults = default_params(slo, policy)
    study.enqueue_trial({k: v for k, v in defaults.items() if v is not None})
    records: list[TrialRecord] = []

    def objective_fn(trial) -> float:
        params = _suggest(trial, slo, policy)
        value = objective(*policy_spec(policy, params))
        record = TrialRecord(trial.number, params, value)
        records.append(record)
        if on_trial is not None:
            on_trial(record)
        return value

    study.optimize(objective_fn, n_trials=trials, show_progress_bar=progress)
    # The first record is the enqueued defaults; ties keep the earliest (the defaults first).
    best = max(records, key=lambda r: (r.value, -r.number))
    return TuneResult(policy, objective_name, dict(best.params), best.value, defaults, records[0].value,
                      tuple(records))
