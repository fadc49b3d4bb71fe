"""Tuning objectives measured in the simulator: what `adaptive-sarathi tune` hands the controller's
offline tuner (adaptive_sarathi.controller.tuner), which knows nothing of scenarios.

Objectives:
  capacity  the SLO capacity (adaptive_sarathi.capacity.find_capacity's slo_capacity_qps): the
            highest Poisson rate at which every declared target holds at its percentile (TTFT over
            requests, TBT over every token gap), searched from `qps`;
  proxy     Sarathi-Serve's capacity (capacity_qps): the highest rate with P99 TBT <= the TBT
            target and median scheduling delay <= 2 s, from the same search; it ignores the TTFT
            target, kept to compare with tunings made against it;
  goodput   requests per second meeting every SLO target in one simulation at `qps`.

Trials are kept cheap by the caller's scenario (e.g. a few hundred requests) and a coarse search
tolerance. Nothing here talks to a GPU; the latency model inside the scenario stands for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from adaptive_sarathi.capacity import find_capacity
from adaptive_sarathi.controller.tuner import Objective, TrialRecord, TuneResult, policy_spec, tune
from adaptive_sarathi.scenario import Scenario

OBJECTIVES = ("capacity", "proxy", "goodput")
# objective -> (CapacityResult field, Probe criterion it is searched on)
_SEARCHED = {"capacity": ("slo_capacity_qps", "meets_slo"), "proxy": ("capacity_qps", "meets_capacity")}


def scenario_objective(scenario: Scenario, objective: str = "capacity", qps: float | None = None,
                       rel_tol: float = 0.05, progress: bool = False) -> Objective:
    """The tuner's objective: (policy spec, adaptive params) -> `objective` of `scenario` run with
    that policy. Each call runs one simulation (goodput) or a capacity search (about 6-15
    simulations, shared between the SLO capacity and the proxy). Raises ValueError naming the
    argument for an unknown objective or goodput without `qps`; a call raises ValueError when the
    capacity search finds no rate that breaks its criterion (the value would be the search's
    ceiling, not the policy's). `progress` shows each capacity search's simulations as they run."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is unknown: use one of {', '.join(OBJECTIVES)}")
    if objective == "goodput" and qps is None:
        raise ValueError("the goodput objective is measured at one rate: pass --qps")
    scale = 1.0 if qps is None else qps / scenario.workload.mean_qps

    def measure(spec: str, adaptive_params: dict[str, Any] | None) -> float:
        run = dataclasses.replace(scenario, policy=spec, policy_params=adaptive_params)
        if objective == "goodput":
            result = run.run(scale, progress=progress)
            return result.slo.goodput_rps if result.slo is not None else 0.0
        field, criterion = _SEARCHED[objective]
        result = find_capacity(run, start_scale=scale, rel_tol=rel_tol, progress=progress)
        if result.probes and all(getattr(p, criterion) for p in result.probes):
            # Every rate passed: the search stopped at its ceiling, which says nothing about the policy.
            what = ("every declared target held" if objective == "capacity"
                    else "the workload never queued 2 s")
            raise ValueError(f"{what} at every rate up to {getattr(result, field):.3g} qps, so {objective} "
                             "cannot rank parameters: use more requests (--num-requests)")
        return getattr(result, field)

    return measure


def evaluate(scenario: Scenario, policy: str, params: dict[str, Any], objective: str = "capacity",
             qps: float | None = None, rel_tol: float = 0.05) -> float:
    """The objective (higher is better) of `scenario` run with `policy` ("adaptive" or "fixed") at
    `params`, as one tuner trial measures it."""
    return scenario_objective(scenario, objective, qps, rel_tol)(*policy_spec(policy, params))


def tune_scenario(scenario: Scenario, *, policy: str = "adaptive", objective: str = "capacity",
                  qps: float | None = None, trials: int = 20, seed: int = 0, rel_tol: float = 0.05,
                  progress: bool = False, on_trial: Callable[[TrialRecord], None] | None = None,
                  storage: str | None = None, study_name: str | None = None) -> TuneResult:
    """controller.tuner.tune over `scenario` (its `policy` field replaced per trial), in `storage`
    under `study_name` when given (resumable). `progress` shows the simulations inside each trial.
    Raises ValueError naming the argument for a scenario without an SLO policy, an unknown
    objective, goodput without a rate, an unknown policy, fewer than 1 trial or a storage without
    a study name."""
    if scenario.slo is None:
        raise ValueError("tuning needs SLO targets: pass --slo-policy NAME|FILE or --slo ttft:MS,tbt:MS")
    measure = scenario_objective(scenario, objective, qps, rel_tol, progress=progress)
    return tune(measure, scenario.slo, policy=policy, objective_name=objective, trials=trials, seed=seed,
                on_trial=on_trial, storage=storage, study_name=study_name)
