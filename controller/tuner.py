"""Offline tuner: an Optuna study over a budget policy's hyperparameters.

The study (TPE sampler, seeded) proposes constructor hyperparameters for the adaptive policy (or,
as a baseline, a fixed budget and chunk), scores them with the caller's objective and keeps the
best. The defaults are always evaluated first (trial 0), so the result is never worse than
starting from the defaults on the objective as measured.

The objective is a callable built by the service layer (adaptive_sarathi.tuning builds one that
runs a scenario in the simulator): the controller imports nothing from the service layer. Only
hyperparameters are searched; deployment facts (block size, KV watermark) come from the engine.

A study lives in memory, or in an Optuna RDB storage (`storage="sqlite:///study.db"` and a
`study_name`): then every finished trial is committed as it ends, and a later call with the same
storage and name resumes it, running only the trials still missing from `trials` (optuna-dashboard
opens the same storage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from adaptive_sarathi.controller.slo import SLOPolicy

# (make_policy spec, adaptive params or None) -> objective value, higher is better.
Objective = Callable[[str, "dict[str, Any] | None"], float]

TUNABLE_POLICIES = ("adaptive", "fixed")

# name -> (low, high, log scale, integer). Ranges bracket the defaults with room on both sides.
ADAPTIVE_SPACE: dict[str, tuple[float, float, bool, bool]] = {
    "margin": (0.0, 0.2, False, False),
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
    importances: dict[str, float] = field(default_factory=dict)  # fANOVA share of the value's variance per param

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
         on_trial: Callable[[TrialRecord], None] | None = None, storage: str | None = None,
         study_name: str | None = None) -> TuneResult:
    """Run a seeded TPE study until it holds `trials` finished trials (the first is the defaults)
    and return the best of them.

    Each trial calls `objective(spec, adaptive_params)` once (see policy_spec); `slo` gives the
    fixed budget's ladder and the adaptive defaults; `objective_name` labels the result. With
    `storage` (an Optuna RDB URL) and `study_name`, the study is created or resumed there: trials
    finished before count towards `trials`, failed or interrupted ones do not, and on_trial is
    called for the new ones only. Raises ValueError naming the argument for an unknown policy,
    fewer than 1 trial, a storage without a study name, or a stored study of another policy or
    objective; what `objective` raises propagates (the trial is recorded as failed).
    """
    import optuna

    if policy not in TUNABLE_POLICIES:
        raise ValueError(f"policy={policy!r} cannot be tuned: use one of {', '.join(TUNABLE_POLICIES)}")
    if trials < 1:
        raise ValueError(f"trials={trials!r} is invalid: use at least 1 (the first trial is the defaults)")
    if storage is not None and not study_name:
        raise ValueError("a study in --storage needs a name to be resumed by: pass --study-name NAME")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(optuna, storage, study_name, seed, policy, objective_name)
    defaults = default_params(slo, policy)
    enqueued = {k: v for k, v in defaults.items() if v is not None}
    done = _finished(study)
    if not any(t.params == enqueued for t in done) and not _waiting(study):
        study.enqueue_trial(enqueued)

    def objective_fn(trial) -> float:
        params = _suggest(trial, slo, policy)
        trial.set_user_attr("params", params)  # the whole set, None values too (Optuna's params drop them)
        value = objective(*policy_spec(policy, params))
        if on_trial is not None:
            on_trial(TrialRecord(trial.number, params, value))
        return value

    missing = trials - len(done)
    if missing > 0:
        study.optimize(objective_fn, n_trials=missing, show_progress_bar=progress)
    records = [TrialRecord(t.number, dict(t.user_attrs["params"]), t.value) for t in _finished(study)]
    default = next(r for r in records if {k: v for k, v in r.params.items() if v is not None} == enqueued)
    # Ties keep the earliest, so the defaults win a tie.
    best = max(records, key=lambda r: (r.value, -r.number))
    return TuneResult(policy, objective_name, dict(best.params), best.value, defaults, default.value,
                      tuple(records), _importances(optuna, study))


def _open_study(optuna, storage: str | None, study_name: str | None, seed: int, policy: str, objective_name: str):
    sampler = optuna.samplers.TPESampler(seed=seed)
    if storage is None:
        return optuna.create_study(direction="maximize", sampler=sampler)
    # A heartbeat lets a later run mark trials of a killed process as failed instead of running forever.
    rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=30, grace_period=90)
    study = optuna.create_study(storage=rdb, study_name=study_name, direction="maximize", sampler=sampler,
                                load_if_exists=True)
    stored = study.user_attrs
    if not stored:
        study.set_user_attr("policy", policy)
        study.set_user_attr("objective", objective_name)
    elif (stored.get("policy"), stored.get("objective")) != (policy, objective_name):
        raise ValueError(f"study {study_name!r} in {storage} tunes {stored.get('policy')} on "
                         f"{stored.get('objective')}, not {policy} on {objective_name}: pass another --study-name")
    return study


def _finished(study) -> list:
    import optuna

    return sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                  key=lambda t: t.number)


def _waiting(study) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _importances(optuna, study) -> dict[str, float]:
    """fANOVA importances of the finished trials; empty while they cannot be computed (fewer than
    two trials, or a parameter that never varied)."""
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
