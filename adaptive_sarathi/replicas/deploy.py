"""Start N engine replicas on Ray Serve and the ingress in front of them.

Each replica is its own Ray Serve application (`engine-<i>`, one replica each), so the ingress
can address each one and route by its own policy, while Ray places it (its declared CPUs and
GPUs), health-checks it and restarts it when it dies. The ingress runs in the calling process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys

from aiohttp import web

from adaptive_sarathi.replicas.config import ReplicaConfig
from adaptive_sarathi.replicas.ingress import Ingress

logger = logging.getLogger(__name__)

APP_PREFIX = "engine-"
_HEALTH_CHECK_PERIOD_S = 2.0  # how soon Ray notices a dead engine thread (check_health) and replaces it


def _ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ValueError("--replicas needs Ray Serve: pip install 'adaptive-sarathi[replicas]'") from None
    return ray, serve


class ReplicaSet:
    """N replicas and their ingress. `await start()` (on a running loop) connects to or starts
    Ray, deploys the replicas, waits until every one has loaded its model and listens on
    config.server_args' host and port, returning the bound port; `await stop()` closes the
    ingress and deletes the replicas (and shuts down a Ray cluster it started itself)."""

    def __init__(self, config: ReplicaConfig):
        self.config = config
        self.handles: list = []
        self.ingress: Ingress | None = None
        self._runner: web.AppRunner | None = None
        self._started_ray = False

    async def start(self) -> int:
        ray, serve = _ray()
        config = self.config
        if not ray.is_initialized():
            if config.ray_address is None:
                # A local cluster on loopback only: nothing listens beyond this machine.
                # CPUs: at least what the replicas reserve (Ray's default is the host's count, and
                # replicas of a small model may share cores).
                import os

                need = config.num_replicas * config.actor_options(False)["num_cpus"] + 1
                ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
                         num_cpus=max(os.cpu_count() or 1, math.ceil(need)))
            else:
                ray.init(address=config.ray_address, log_to_driver=False)
            self._started_ray = True
        serve.start(proxy_location="Disabled")  # the ingress is ours; Serve's HTTP proxy is not used
        from adaptive_sarathi.replicas.replica import EngineReplica

        gpus = ray.cluster_resources().get("GPU", 0) > 0
        deployment = serve.deployment(
            EngineReplica, name="engine", num_replicas=1, ray_actor_options=config.actor_options(gpus),
            max_ongoing_requests=max(1024, config.server_args.max_waiting or 0),
            health_check_period_s=_HEALTH_CHECK_PERIOD_S,
            graceful_shutdown_timeout_s=config.server_args.shutdown_timeout_s)
        from ray.serve.api import RunTarget

        targets = [RunTarget(deployment.bind(i, config), name=f"{APP_PREFIX}{i}", route_prefix=None)
                   for i in range(config.num_replicas)]
        self.handles = await asyncio.to_thread(serve.run_many, targets)
        args = config.server_args
        self.ingress = Ingress(self.handles, config.routing, args.slo, retry_after_s=args.retry_after_s,
                               poll_interval_s=config.poll_interval_s, max_body_bytes=args.max_body_bytes)
        await self.ingress.poll_once()
        self.ingress.start()
        self._runner = web.AppRunner(self.ingress.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, args.host, args.port).start()
        except OSError:
            await self.stop()
            raise
        return self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self.ingress is not None:
            await self.ingress.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        ray, serve = _ray()
        if ray.is_initialized():
            for i in range(self.config.num_replicas):
                try:
                    await asyncio.to_thread(serve.delete, f"{APP_PREFIX}{i}")
                except Exception as err:  # already gone
                    logger.info("replica %d: %r", i, err)
            if self._started_ray:
                serve.shutdown()
                ray.shutdown()

    def replica_actor_names(self) -> list[str]:
        """The Ray actor name of every replica, in index order (what `ray.kill` needs)."""
        ray, _ = _ray()
        from ray.util import list_named_actors

        names = [a["name"] for a in list_named_actors(all_namespaces=True)]
        return [next(n for n in names if n.startswith(f"SERVE_REPLICA::{APP_PREFIX}{i}#")) for i in
                range(self.config.num_replicas)]


async def _serve_until_signal(config: ReplicaConfig) -> None:
    replicas = ReplicaSet(config)
    port = await replicas.start()
    print(f"adaptive-sarathi: serving {config.num_replicas} replicas ({config.routing} routing) on "
          f"http://{config.server_args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("adaptive-sarathi: shutting down the replicas", file=sys.stderr, flush=True)
    await replicas.stop()


def serve_replicas(config: ReplicaConfig) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit status (0 after a clean stop, 1 when the
    ingress port cannot be bound). Raises ValueError without Ray Serve installed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _ray()
    try:
        asyncio.run(_serve_until_signal(config))
    except OSError as err:
        print(f"error: cannot listen on {config.server_args.host}:{config.server_args.port}: {err}", file=sys.stderr)
        return 1
    return 0
