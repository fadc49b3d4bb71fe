"""One engine replica: the single-engine server, run inside a Ray Serve replica actor.

The replica runs the very server `adaptive-sarathi serve` runs (engine thread, aiohttp app,
metrics) on a loopback port of its own, on a private event loop thread, so every request gets
the same validation, errors and streaming as one engine. Ray Serve calls into it through
`forward` (an HTTP request, answered as a stream: first the status and headers, then the body's
bytes as they come) and `snapshot` (the routing forecast); the loopback hop stays inside this
actor's process, Ray carries everything between processes and hosts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import replace

from adaptive_sarathi.engine.queue_forecast import PrefillRate, ReplicaSnapshot, snapshot
from adaptive_sarathi.replicas.config import ReplicaConfig

# Headers that describe one hop's connection, not the message (RFC 9110 7.6.1), and the ones
# aiohttp recomputes for the body it sends.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                         "upgrade", "content-length", "host", "content-encoding"})
_START_TIMEOUT_S = 600.0  # a large model on a slow disk; Ray's own constructor timeout still applies


class EngineReplica:
    """A Ray Serve deployment class (deploy.py wraps it with serve.deployment). Built with the
    replica's index (its metrics' `engine` label) and the ReplicaConfig; loads the model and
    starts listening before the constructor returns, raising what loading raises."""

    def __init__(self, index: int, config: ReplicaConfig):
        from adaptive_sarathi.engine.factory import create_engine
        from adaptive_sarathi.engine.loaders.default_model import DEFAULT_NAME
        from adaptive_sarathi.server.gc_tuning import tune_garbage_collection
        from adaptive_sarathi.server.server import Server

        self.index = index
        engine = create_engine(config.engine_args, config.make_policy())
        tune_garbage_collection()
        self._rate = PrefillRate()
        self._snapshot: ReplicaSnapshot | None = None
        engine.stats_listeners.append(self._rate)
        engine.stats_listeners.append(self._after_step)
        self._engine = engine
        args = replace(config.server_args, host="127.0.0.1", port=0, step_log=None)
        self._server = Server(engine, args, config.engine_args.model or DEFAULT_NAME, engine_index=index)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"replica-{index}-http", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(_START_TIMEOUT_S)
        self._session = None  # the client towards the loopback server, made on Serve's event loop

    def _after_step(self, _stats) -> None:
        # On the engine thread, after every step: the only thread that may read the scheduler.
        # The router reads the reference; replacing it is atomic.
        self._snapshot = snapshot(self._engine.state(), self._engine.policy, self._rate)

    async def snapshot(self) -> ReplicaSnapshot | None:
        """The forecast inputs as of the last step (None before the first step)."""
        return self._snapshot

    async def forward(self, method: str, path: str, headers: list[tuple[str, str]],
                      body: bytes) -> AsyncIterator[dict | bytes]:
        """Serve one HTTP request on this replica's server: yields {"status", "headers"} first,
        then the body in chunks as the server writes them (a stream's events as they come). A
        caller that stops iterating closes the connection, which aborts the request and frees
        its KV blocks (the server's own rule for a client that hangs up)."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                                  auto_decompress=False)
        sent = [(k, v) for k, v in headers if k.lower() not in HOP_HEADERS]
        url = f"http://127.0.0.1:{self.port}{path}"
        async with self._session.request(method, url, headers=sent, data=body) as response:
            yield {"status": response.status,
                   "headers": [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_HEADERS]}
            async for chunk in response.content.iter_any():
                yield chunk

    async def pid(self) -> int:
        """This replica's process id (what a test kills)."""
        import os

        return os.getpid()

    def check_health(self) -> None:
        """Ray Serve's health check: raises once the engine thread has died, so Ray replaces
        this replica (a dead engine answers nothing but 503s)."""
        if self._server.engine.error is not None:
            raise RuntimeError(f"replica {self.index}: the engine failed: {self._server.engine.error!r}")

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
