"""What a replica deployment is made of: one engine's configuration, how many, their resources
and the routing policy in front of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from adaptive_sarathi.engine.factory import EngineArgs
from adaptive_sarathi.engine.routing import get_policy
from adaptive_sarathi.server.server import ServerArgs


@dataclass(frozen=True)
class ReplicaConfig:
    """N replicas of one engine configuration behind one ingress.

    engine_args: every replica's engine. server_args: the ingress's host and port and every
    replica's request limits, API key and SLO policy (each replica listens on a loopback port of
    its own, which only its own deployment talks to). policy: the budget policy spec of each
    replica (controller.registry.make_policy; None: fixed at engine_args.token_budget), built
    fresh per replica with `policy_profile` (a latency-profile CSV, the adaptive policy's prior)
    and `policy_params`. routing: engine/routing.py's policy name. num_gpus_per_replica: the
    GPUs Ray reserves for each replica: default the tensor-parallel size on a GPU engine, 0 on a
    CPU one; a fraction packs several replicas on one GPU (set gpu_memory_utilization to match).
    num_cpus_per_replica: CPUs reserved per replica (default: the engine's torch threads, 1 when
    unset). ray_address: an existing Ray cluster ("auto", "ray://..."); None starts a local one.
    poll_interval_s: how often the ingress reads every replica's snapshot.
    """

    engine_args: EngineArgs
    server_args: ServerArgs
    num_replicas: int = 2
    routing: str = "headroom"
    policy: str | None = None
    policy_profile: str | None = None
    policy_params: Mapping[str, Any] | None = None
    num_gpus_per_replica: float | None = None
    num_cpus_per_replica: float | None = None
    ray_address: str | None = None
    poll_interval_s: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.num_replicas, int) or self.num_replicas < 1:
            raise ValueError(f"--replicas {self.num_replicas!r} is invalid: use an integer >= 1")
        get_policy(self.routing)  # raises naming the known policies
        for name in ("num_gpus_per_replica", "num_cpus_per_replica"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name}={value!r} is invalid: use a number >= 0 or leave it unset")
        if not self.poll_interval_s > 0:
            raise ValueError(f"poll_interval_s={self.poll_interval_s!r} is invalid: use seconds > 0")

    def actor_options(self, gpu_available: bool) -> dict[str, float]:
        """Ray's resource request of one replica. gpu_available: whether the engine will run on
        a GPU (device cuda, or auto on a cluster with GPUs)."""
        args = self.engine_args
        on_gpu = args.device.startswith("cuda") or (args.device == "auto" and gpu_available)
        gpus = self.num_gpus_per_replica
        if gpus is None:
            gpus = float(args.tensor_parallel_size) if on_gpu else 0.0
        cpus = self.num_cpus_per_replica
        if cpus is None:
            cpus = float(args.num_threads or 1)
        return {"num_cpus": cpus, "num_gpus": gpus}

    def make_policy(self):
        """A fresh budget policy for one replica (None: the engine's fixed token budget)."""
        if self.policy is None:
            return None
        from adaptive_sarathi.controller.registry import make_policy
        from adaptive_sarathi.engine.latency.profile import load_profile

        prior = load_profile(self.policy_profile) if self.policy_profile is not None else None
        return make_policy(self.policy, self.server_args.slo, prior=prior, params=self.policy_params)
