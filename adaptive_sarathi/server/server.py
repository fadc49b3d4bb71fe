"""Server lifecycle: start the engine thread and the listener, serve until a signal, shut down."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from aiohttp import web

from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.budget import BudgetPolicy
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.step_log import StepLogWriter, deployment_tags
from adaptive_sarathi.server.gc_tuning import tune_garbage_collection
from adaptive_sarathi.engine.loaders.default_model import DEFAULT_NAME
from adaptive_sarathi.metrics import ServerMetrics, slo_fields
from adaptive_sarathi.server.app import build_app
from adaptive_sarathi.server.cors import CORSConfig
from adaptive_sarathi.server.async_engine import AsyncEngine
from adaptive_sarathi.server.protocol import RequestLimits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerArgs:
    """How the HTTP server listens and protects itself.

    port 0 picks a free port. max_waiting: most requests the engine may hold waiting before new
    ones get 429 (None = no limit). max_prompts_per_request / max_prompt_chars: the RequestLimits
    of one body (400 beyond them). shutdown_timeout_s: how long in-flight requests may run on
    after SIGTERM before they are aborted. docs/server-limits.md states the defaults and why.
    served_model_names: the names requests may call the model by, the first one named in responses
    and metrics (vLLM's --served-model-name); empty: the model's own name.
    step_log: a file to write the step log of the run to (engine/step_log.py; overwritten), or None.
    slo: the SLO policy whose classes requests may name (docs/slo-classes.md), the one the budget
    policy serves; None: requests may name no class. PUT /v1/slo_policy replaces it (Server.args
    then holds the new one). cors: the browser origins allowed (server/cors.py; none by default).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_waiting: int | None = 256
    max_body_bytes: int = 1 << 20
    max_prompts_per_request: int = 64
    max_prompt_chars: int = 200_000
    shutdown_timeout_s: float = 10.0
    retry_after_s: int = 1
    step_log: str | None = None
    slo: SLOPolicy | None = None
    served_model_names: tuple[str, ...] = ()
    cors: CORSConfig = CORSConfig()

    def __post_init__(self) -> None:
        if self.step_log is not None and not Path(self.step_log).parent.is_dir():
            raise ValueError(f"--step-log {self.step_log}: the folder {Path(self.step_log).parent} does not exist: "
                             "create it or write the log elsewhere")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port} is invalid: use 0 (any free port) to 65535")
        if self.max_waiting is not None and self.max_waiting < 1:
            raise ValueError(f"max_waiting={self.max_waiting} is invalid: use an integer >= 1 or leave it unset")
        RequestLimits(self.max_prompts_per_request, self.max_prompt_chars)  # raises naming the bad one
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s={self.shutdown_timeout_s} is invalid: use seconds >= 0")


class Server:
    """One engine behind one listening socket, with its own metrics registry. The model is served
    as args.served_model_names, or as `model_name` when that is empty. engine_index: the metrics'
    `engine` label (a replica's index where several serve one model)."""

    def __init__(self, engine: LLMEngine, args: ServerArgs, model_name: str, engine_index: int = 0):
        self.args = args
        names = args.served_model_names or (model_name,)
        self.model_name = model_name = names[0]
        self.metrics = ServerMetrics(model_name, **slo_fields(args.slo), budget_policy=engine.policy,
                                     engine_index=engine_index)
        self.engine = AsyncEngine(engine, max_waiting=args.max_waiting, observer=self.metrics)
        self.app = build_app(self.engine, self.metrics, model_name, model_aliases=names[1:],
                             api_key=args.api_key,
                             max_body_bytes=args.max_body_bytes, retry_after_s=args.retry_after_s,
                             limits=RequestLimits(args.max_prompts_per_request, args.max_prompt_chars),
                             slo=args.slo, on_slo_change=self._slo_changed, cors=args.cors)
        self._runner: web.AppRunner | None = None
        self._step_log: StepLogWriter | None = None

    def _slo_changed(self, slo: SLOPolicy) -> None:
        self.args = replace(self.args, slo=slo)

    async def start(self) -> int:
        """Start the engine thread and listen; returns the bound port. With args.step_log, every
        step from now on is logged there (OSError when the file cannot be created)."""
        if self.args.step_log is not None:
            try:
                self._step_log = StepLogWriter(self.args.step_log, deployment_tags(self.engine.engine, self.model_name))
            except OSError as err:
                raise ValueError(f"--step-log {self.args.step_log}: cannot write it ({err}): pick a writable file") from None
            self.engine.engine.stats_listeners.append(self._step_log)  # before the engine thread runs
        self.engine.start()
        # handler_cancellation: a client that hangs up cancels its handler, which aborts its
        # requests even before their first token.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.args.host, self.args.port).start()
        except OSError:  # e.g. the port is taken: leave no engine thread behind
            await self.stop()
            raise
        return self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Refuse new requests (503), let in-flight ones finish within the shutdown timeout and
        abort the rest (finish reason abort), then close the listener."""
        await self.engine.shutdown(self.args.shutdown_timeout_s)
        await self.close_step_log()
        if self._runner is not None:
            await self._runner.cleanup()

    async def close_step_log(self) -> None:
        """Write out and close the step log, if any (the engine thread must have stopped or died)."""
        if self._step_log is not None:
            self.engine.engine.stats_listeners.remove(self._step_log)
            await asyncio.to_thread(self._step_log.close)
            self._step_log = None


async def serve(engine: LLMEngine, args: ServerArgs, model_name: str) -> bool:
    """Serve until SIGTERM or SIGINT (then stop gracefully, returning True) or until the engine
    thread dies (then stop at once and return False, so the process can exit non-zero and a
    supervisor restart it rather than it answering 503s for ever)."""
    server = Server(engine, args, model_name)
    port = await server.start()
    print(f"adaptive-sarathi: serving {server.model_name} on http://{args.host}:{port}", flush=True)
    if args.step_log is not None:
        print(f"adaptive-sarathi: writing every step to {args.step_log}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.engine.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal ends the process at once
        loop.remove_signal_handler(sig)
    if server.engine.error is not None:
        print(f"adaptive-sarathi: the engine failed, exiting: {server.engine.error!r}", file=sys.stderr, flush=True)
        await server.close_step_log()
        if server._runner is not None:
            await server._runner.cleanup()
        return False
    print(f"adaptive-sarathi: shutting down ({server.engine.num_in_flight} requests in flight)",
          file=sys.stderr, flush=True)
    await server.stop()
    return True


def run_server(engine_args: EngineArgs, args: ServerArgs, policy: BudgetPolicy | None = None) -> int:
    """Load the model, serve until a signal and return the exit status (0 after a clean stop, 1
    when the port cannot be bound, 3 when the engine failed while serving).
    `policy` decides each step's budget (None: fixed at engine_args' token budget)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a server that stops answering
    # is diagnosed without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    engine = create_engine(engine_args, policy)
    tune_garbage_collection()
    try:
        clean = asyncio.run(serve(engine, args, engine_args.model or DEFAULT_NAME))
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    return 0 if clean else 3
