"""A simulation scenario: workload, scheduler, policy, SLO, latency model and KV cache, run at any
rate. What `simulate`, `capacity` and the experiments share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from adaptive_sarathi.engine.budget import BudgetPolicy
from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.latency.hardware import GPUS
from adaptive_sarathi.engine.latency.profile import ProfileLatencyModel, load_profile
from adaptive_sarathi.engine.latency.shape import LatencyModel
from adaptive_sarathi.engine.loaders.dummy import DUMMY_PRESETS
from adaptive_sarathi.engine.routing import get_policy as get_routing_policy
from adaptive_sarathi.engine.simulator import SimulationResult, SloTargets, simulate, simulate_replicas
from adaptive_sarathi.workloads import RecordedWorkload, WorkloadSpec


@dataclass(frozen=True)
class Scenario:
    """Everything but the request rate. `workload` is a seeded spec or recorded requests (both
    scale their rate with scaled()). `policy` is a spec for controller.registry.make_policy
    (e.g. "fixed:512", "adaptive"); a fresh policy is built for every run. `policy_params`
    overrides the adaptive policy's hyperparameters (a dict, e.g. from a seed file). `admission`
    refuses the requests the policy does not admit when they arrive, as a server answers them 429
    (simulate(admission=...)); on by default, since the server always asks. `replicas` engines of
    this configuration (each its own KV cache of num_kv_blocks) serve the workload behind a router
    that places each request by the routing policy `routing` (engine/routing.py); `admission`
    then has each replica refuse, by its own policy, what it is handed (every replica is a whole
    server, which answers its own 429s), on top of the router's own refusals (headroom's 429).
    One replica is the single engine, routing unused."""

    workload: WorkloadSpec | RecordedWorkload
    scheduler: SchedulerConfig
    policy: str
    latency_model: LatencyModel
    num_kv_blocks: int
    slo: SLOPolicy | None = None
    seed: int = 0
    policy_params: Mapping[str, Any] | None = None
    admission: bool = True
    replicas: int = 1
    routing: str = "round_robin"

    def __post_init__(self) -> None:
        if not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"replicas={self.replicas!r} is invalid: use an integer >= 1")
        get_routing_policy(self.routing)  # raises naming the known policies
        # Fail on a bad policy spec, or a workload class the SLO policy lacks, before any simulation runs.
        self.make_policy()
        if self.slo is not None:
            declared = {c.name for c in self.slo.classes}
            unknown = sorted(set(self.workload.slo_classes) - declared)
            if unknown:
                raise ValueError(f"the workload's request class(es) {', '.join(unknown)} are not in SLO policy "
                                 f"{self.slo.name!r} (its classes: {', '.join(sorted(declared)) or 'none'}): pass "
                                 "--slo-policy with a policy that declares them, or rename slo_class in the workload")

    def make_policy(self) -> BudgetPolicy:
        """A fresh, unfitted policy for one run."""
        return make_policy(self.policy, self.slo, prior=self.latency_model, seed=self.seed, params=self.policy_params)

    def run(self, qps_scale: float = 1.0, *, record_steps: bool = False, progress: bool = False) -> SimulationResult:
        """Simulate the workload with every phase's rate multiplied by `qps_scale`. Raises
        ValueError when a request does not fit the context window (see simulate). With several
        replicas, record_steps is not available (the result has no steps)."""
        if self.replicas > 1:
            return simulate_replicas(self.workload.scaled(qps_scale).generate(), self.scheduler, self.make_policy,
                                     self.latency_model, num_replicas=self.replicas, routing=self.routing,
                                     num_kv_blocks=self.num_kv_blocks, slo=slo_targets(self.slo), progress=progress,
                                     admission=self.admission)
        policy = self.make_policy()
        return simulate(self.workload.scaled(qps_scale).generate(), self.scheduler, policy, self.latency_model,
                        num_kv_blocks=self.num_kv_blocks, slo=slo_targets(self.slo), record_steps=record_steps,
                        progress=progress, admission=self.admission)


def slo_targets(policy: SLOPolicy | None) -> SloTargets | None:
    """The targets of an SLO policy as a simulation judges them (SLOPolicy.as_targets)."""
    return None if policy is None else policy.as_targets()


def latency_model(profile: str | Path | None = None, roofline: str | None = None) -> LatencyModel:
    """A measured profile (CSV path) or a roofline model ("GPU:ARCH"), exactly one. Raises
    ValueError naming the flag to give."""
    if (profile is None) == (roofline is None):
        raise ValueError("give exactly one latency model: --profile CSV (measured) or --roofline GPU:ARCH "
                         "(e.g. h100:llama-3-8b)")
    if profile is not None:
        return load_profile(profile)
    from adaptive_sarathi.engine.latency.roofline import roofline_from_spec

    return roofline_from_spec(roofline)


def default_kv_blocks(model: LatencyModel, block_size: int, gpu_memory_utilization: float = 0.9) -> int:
    """The KV blocks the modelled deployment holds: from a roofline model; from a profile's
    `kv_capacity_tokens` tag (what the profiled engine could hold), else from its `gpu` and `model`
    tags when they name a known GPU and a dummy preset. Raises ValueError asking for
    --num-kv-blocks when the model says none of these."""
    from adaptive_sarathi.engine.latency.roofline import RooflineModel, roofline_from_spec

    if isinstance(model, RooflineModel):
        return model.num_kv_blocks(block_size, gpu_memory_utilization)
    if isinstance(model, ProfileLatencyModel):
        tags = model.tags
        if tags.get("kv_capacity_tokens", "").isdigit() and int(tags["kv_capacity_tokens"]) >= block_size:
            return int(tags["kv_capacity_tokens"]) // block_size
        gpu = next((name for name in GPUS if name in tags.get("gpu", "").lower()), None)
        arch = tags.get("model", "").removeprefix("dummy:")
        if gpu is not None and arch in DUMMY_PRESETS:
            return roofline_from_spec(f"{gpu}:{arch}").num_kv_blocks(block_size, gpu_memory_utilization)
    raise ValueError("cannot tell the KV cache size from this latency model: pass --num-kv-blocks N "
                     "(or tag the profile with '# kv_capacity_tokens: N')")
