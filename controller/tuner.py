"""Offline tuner: an Optuna study over a budget policy's hyperparameters, scored in the simulator.

The study (TPE sampler, seeded) proposes constructor hyperparameters for the adaptive policy (or,
as a baseline, a fixed budget and chunk), runs the scenario in the simulator with them and keeps
the best. The defaults are always evaluated first (trial 0), so the result is never worse than
starting from the defaults on the objective as measured. Objectives:

  capacity  the highest Poisson rate with P99 TBT <= the TBT target and median scheduling delay
            <= 2 s (adaptive_sarathi.capacity.find_capacity), searched from `qps`;
  goodput   requests per second meeting every SLO target in one simulation at `qps`.

Trials are kept cheap by the caller's scenario (e.g. a few hundred requests) and a coarse search
tolerance. Nothing here talks to a GPU; the latency model inside the scenario stands for it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from adaptive_sarathi.scenario import Scenario

OBJECTIVES = ("capacity", "goodput")
TUNABLE_POLICIES = ("adaptive", "fixed")

# name -> (low, high, log scale, integer). Ranges bracket the defaults with room on both sides.
ADAPTIVE_SPACE: dict[str, tuple[float, float, bool, bool]] = {
    "knee_slack": (0.0, 0.6, False, False),
    "tbt_margin": (0.0, 0.2, False, False),
    "flow_headroom": (1.0, 4.0, True, False),
    "pressure_gain": (0.25, 4.0, True, False),
    "max_queue_delay_s": (0.5, 8.0, True, False),
    "kv_reserve": (0.0, 0.6, False, False),
    "kv_horizon_steps": (0, 256, False, True),
    "max_waiting_share": (0.0, 1.0, False, False),
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


def evaluate(scenario: Scenario, policy: str, params: dict[str, Any], objective: str = "capacity",
             qps: float | None = None, rel_tol: float = 0.05) -> float:
    """The objective (higher is better) of `scenario` run with `policy` at `params`. Runs one
    simulation (goodput) or a capacity search (about 6-10 simulations). Raises ValueError when
    the capacity search finds no rate that breaks the criteria (the workload is too short)."""
    from adaptive_sarathi.capacity import find_capacity

    spec, adaptive_params = policy_spec(policy, params)
    run = dataclasses.replace(scenario, policy=spec, policy_params=adaptive_params)
    scale = 1.0 if qps is None else qps / scenario.workload.mean_qps
    if objective == "goodput":
        result = run.run(scale)
        return result.slo.goodput_rps if result.slo is not None else 0.0
    result = find_capacity(run, start_scale=scale, rel_tol=rel_tol)
    if result.probes and all(p.meets_capacity for p in result.probes):
        # Every rate passed: the search stopped at its ceiling, which says nothing about the policy.
        raise ValueError(f"the workload never queued 2 s at any rate up to {result.capacity_qps:.3g} qps, so "
                         "capacity cannot rank parameters: use more requests (--num-requests)")
    return result.capacity_qps


def default_params(scenario: Scenario, policy: str) -> dict[str, Any]:
    """The starting point: the adaptive policy's constructor defaults over the tuned names, or the
    SLO policy's fallback budget for fixed."""
    if policy == "fixed":
        bounds = scenario.slo.bounds
        return {"token_budget": bounds.fallback_token_budget, "max_chunk": None}
    from adaptive_sarathi.controller.adaptive import AdaptiveBudget

    defaults = AdaptiveBudget(scenario.slo).get_params()
    return {name: defaults[name] for name in ADAPTIVE_SPACE}


def _suggest(trial, scenario: Scenario, policy: str) -> dict[str, Any]:
    if policy == "fixed":
        bounds = scenario.slo.bounds
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


def tune(scenario: Scenario, *, policy: str = "adaptive", objective: str = "capacity", qps: float | None = None,
         trials: int = 20, seed: int = 0, rel_tol: float = 0.05, progress: bool = False,
         on_trial: Callable[[TrialRecord], None] | None = None) -> TuneResult:
    """Run a seeded TPE study of `trials` trials (the first is the defaults) and return the best.

    `scenario` fixes the workload, scheduler, latency model, KV cache and SLO policy; its `policy`
    field is replaced per trial. Raises ValueError naming the argument for an unknown policy or
    objective, fewer than 1 trial, a scenario without an SLO policy, or goodput without a rate.
    """
    import optuna

    if policy not in TUNABLE_POLICIES:
        raise ValueError(f"policy={policy!r} cannot be tuned: use one of {', '.join(TUNABLE_POLICIES)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is unknown: use one of {', '.join(OBJECTIVES)}")
    if trials < 1:
        raise ValueError(f"trials={trials!r} is invalid: use at least 1 (the first trial is the defaults)")
    if scenario.slo is None:
        raise ValueError("tuning needs SLO targets: pass --slo-policy NAME|FILE or --slo ttft:MS,tbt:MS")
    if objective == "goodput" and qps is None:
        raise ValueError("the goodput objective is measured at one rate: pass --qps")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    defaults = default_params(scenario, policy)
    study.enqueue_trial({k: v for k, v in defaults.items() if v is not None})
    records: list[TrialRecord] = []

    def objective_fn(trial) -> float:
        params = _suggest(trial, scenario, policy)
        value = evaluate(scenario, policy, params, objective, qps, rel_tol)
        record = TrialRecord(trial.number, params, value)
        records.append(record)
        if on_trial is not None:
            on_trial(record)
        return value

    study.optimize(objective_fn, n_trials=trials, show_progress_bar=progress)
    # The first record is the enqueued defaults; ties keep the earliest (the defaults first).
    best = max(records, key=lambda r: (r.value, -r.number))
    return TuneResult(policy, objective, dict(best.params), best.value, defaults, records[0].value, tuple(records))
