"""AsyncEngine: an LLMEngine on its own thread, streaming its outputs into asyncio.

The engine is not thread-safe, so only the engine thread touches it. The event loop submits and
aborts through a thread-safe inbox that the engine thread drains before every step (and blocks on
while idle); outputs come back through `loop.call_soon_threadsafe`, once per step. Text prompts
are tokenized on a small thread pool before submission (`tokenize`), so a long prompt delays only
its own request, never the step loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from adaptive_sarathi.engine.engine import InvalidRequestError, LLMEngine
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.stats import EngineState, StepStats
from adaptive_sarathi.engine.tokenizer import Tokenizer
from adaptive_sarathi.server.errors import (EngineDeadError, EngineStoppedError, NoSLOPolicyError, QueueFullError,
                                            RequestFailedError)

logger = logging.getLogger(__name__)

Prompt = str | list[int]


class EngineObserver(Protocol):
    """Receives plain stats objects on the engine thread (e.g. the Prometheus metrics)."""

    def observe_step(self, stats: StepStats) -> None:
        """After every engine step."""

    def observe_state(self, state: EngineState) -> None:
        """After the engine thread admitted or aborted requests outside a step."""

    def observe_output(self, output: RequestOutput) -> None:
        """For every output, including the final one of an aborted request."""

    def observe_added(self, max_tokens: Sequence[int]) -> None:
        """After requests were admitted, one asking for at most max_tokens[i] tokens each."""


class RequestStream:
    """The outputs of one submitted group of prompts, as (prompt index, RequestOutput) pairs, until
    every prompt's request has finished. Raises EngineDeadError if the engine dies meanwhile, and
    RequestFailedError when the engine ended one of its requests on an error."""

    def __init__(self, request_ids: Sequence[str]):
        self.request_ids = tuple(request_ids)
        self._queue: asyncio.Queue[tuple[int, RequestOutput] | BaseException] = asyncio.Queue()
        self._open = set(request_ids)

    def __aiter__(self) -> RequestStream:
        return self

    def push(self, item: tuple[int, RequestOutput] | BaseException) -> None:
        """Queue an output or an error for the consumer (the engine's delivery, on the loop)."""
        self._queue.put_nowait(item)

    async def __anext__(self) -> tuple[int, RequestOutput]:
        if not self._open:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if item[1].finished:
            self._open.discard(item[1].request_id)
            if item[1].error is not None:
                raise RequestFailedError(item[1].error)
        return item


@dataclass
class _Submit:
    request_ids: list[str]
    prompts: list[Prompt]
    params: list[SamplingParams]  # one per prompt
    arrival_time: float
    accepted: asyncio.Future
    slo_class: str | None = None


@dataclass
class _Abort:
    request_ids: list[str]


@dataclass
class _SetSLO:
    slo: object  # an SLO policy (controller/slo.py SLOPolicy), handed to the budget policy's set_slo
    done: asyncio.Future


class _Stop:
    pass


class AsyncEngine:
    """Serves an LLMEngine to asyncio code. Call `start()` on the event loop before `open()`.

    max_waiting: most requests the engine's waiting queue may hold; a submission that would
    exceed it is refused with QueueFullError (None = unbounded). tokenizer_threads: threads that
    tokenize text prompts off the engine thread.
    """

    def __init__(self, engine: LLMEngine, max_waiting: int | None = None,
                 observer: EngineObserver | None = None, tokenizer_threads: int = 2):
        self.engine = engine
        self._tokenizer_pool = ThreadPoolExecutor(max_workers=tokenizer_threads, thread_name_prefix="tokenize")
        self.max_waiting = max_waiting
        self.observer = observer
        self.error: BaseException | None = None
        self._inbox: queue.SimpleQueue[_Submit | _Abort | _SetSLO | _Stop] = queue.SimpleQueue()
        self._ids = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Loop-thread state: where each in-flight request's outputs go, and submissions not yet
        # answered by the engine thread.
        self._routes: dict[str, tuple[RequestStream, int]] = {}
        self._pending: set[asyncio.Future] = set()
        self._idle: asyncio.Event | None = None
        self.failed: asyncio.Event | None = None  # set once the engine thread has died
        # Engine-thread state: requests the engine holds.
        self._live: set[str] = set()
        if observer is not None:
            engine.stats_listeners.append(observer.observe_step)

    # -- event-loop side ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread; must be called from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self.failed = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    @property
    def is_serving(self) -> bool:
        """True while the engine thread runs and takes requests (not after a failure or during
        shutdown)."""
        return (self.error is None and not self._stopping and self._thread is not None
                and self._thread.is_alive())

    @property
    def max_model_len(self) -> int:
        """The context window in tokens (prompt + output)."""
        return self.engine.max_model_len

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The model's tokenizer, or None. The event loop uses it only to render chat templates."""
        return self.engine.tokenizer

    @property
    def num_in_flight(self) -> int:
        return len(self._routes)

    def clock(self) -> float:
        """The engine clock (seconds); arrival times passed to `open` use it."""
        return self.engine.clock()

    async def tokenize(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each prompt: text is encoded on the tokenizer threads (token-id prompts
        pass through unchanged). Raises InvalidRequestError (field "prompt") for text the tokenizer
        cannot encode or a model without a tokenizer; mutates nothing."""
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(self._tokenizer_pool, self.engine.tokenize, p)
                if isinstance(p, str) else p for p in prompts]

    @asynccontextmanager
    async def open(self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams],
                   arrival_time: float | None = None, slo_class: str | None = None,
                   request_ids: Sequence[str] | None = None) -> AsyncIterator[RequestStream]:
        """Submit one request per prompt and yield their stream once the engine accepted them all.
        `params` is shared by every prompt or given per prompt. Every request is added with
        `slo_class` (LLMEngine.add_request; the caller checks the name) and, when given, the id of
        `request_ids` at its position (else "req-<n>").

        Raises, submitting nothing: InvalidRequestError (the field named) for a prompt the engine
        refuses or a request id already in flight (field "request_id"), QueueFullError,
        EngineStoppedError while shutting down, EngineDeadError. Leaving the context (a finished
        stream, an error, a cancelled task such as a dropped client) aborts the requests still
        running and so frees their KV blocks.
        """
        self._check_taking_commands()
        per_prompt = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(per_prompt) != len(prompts) or (request_ids is not None and len(request_ids) != len(prompts)):
            raise ValueError("params and request_ids need one entry per prompt")
        ids = [f"req-{next(self._ids)}" for _ in prompts] if request_ids is None else list(request_ids)
        taken = [rid for rid in ids if rid in self._routes]
        if taken or len(set(ids)) != len(ids):
            raise InvalidRequestError("request_id", f"request id {(taken or ids)[0]!r} is already in flight: "
                                                    "use a new id for each request")
        stream = RequestStream(ids)
        accepted = self._loop.create_future()
        self._pending.add(accepted)
        for index, rid in enumerate(ids):
            self._routes[rid] = (stream, index)
        self._idle.clear()
        self._inbox.put(_Submit(ids, list(prompts), per_prompt,
                                self.clock() if arrival_time is None else arrival_time, accepted, slo_class))
        try:
            await accepted
        except BaseException:
            # Cancelled while the engine may already hold the requests: abort them (a no-op for
            # ids it never added). A refusal added nothing.
            self._forget(ids, abort=accepted.cancelled())
            raise
        finally:
            self._pending.discard(accepted)
        try:
            yield stream
        finally:
            self._forget(ids, abort=True)

    def _check_taking_commands(self) -> None:
        """Raise EngineDeadError, RuntimeError (not started) or EngineStoppedError unless the
        engine thread takes new commands."""
        if self.error is not None:
            raise EngineDeadError(f"the engine stopped on an error: {self.error!r}")
        if self._loop is None:
            raise RuntimeError("AsyncEngine.start() was not called")
        if self._stopping:
            raise EngineStoppedError("the server is shutting down")

    @property
    def serves_slo(self) -> bool:
        """Whether the budget policy serves an SLO policy that set_slo can replace: it has a
        set_slo and plans for an SLO (an `slo` attribute or deadlines). A plain fixed budget does not."""
        policy = self.engine.policy
        return callable(getattr(policy, "set_slo", None)) and (
            getattr(policy, "slo", None) is not None or policy.slo_targets() is not None)

    async def set_slo(self, slo) -> None:
        """Hand `slo` to the budget policy's set_slo on the engine thread, between two steps, and
        return once it is in force: requests submitted afterwards are stamped with its targets;
        requests already held keep their deadlines, and none is dropped. Raises NoSLOPolicyError
        when the policy serves no SLO, ValueError when the policy refuses `slo` (nothing changed),
        EngineStoppedError while shutting down, EngineDeadError."""
        self._check_taking_commands()
        done = self._loop.create_future()
        self._pending.add(done)
        self._inbox.put(_SetSLO(slo, done))
        try:
            await done
        finally:
            self._pending.discard(done)

    async def shutdown(self, grace_s: float) -> None:
        """Refuse new requests, let in-flight ones finish for up to `grace_s` seconds, then abort
        the rest (their streams end with finish reason abort) and stop the engine thread."""
        self._stopping = True
        if self._thread is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        except asyncio.TimeoutError:
            logger.info("aborting %d requests still in flight", len(self._routes))
        self._inbox.put(_Stop())
        await asyncio.to_thread(self._thread.join)
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)

    def _forget(self, ids: Sequence[str], abort: bool) -> None:
        unfinished = [rid for rid in ids if self._routes.pop(rid, None) is not None]
        if abort and unfinished:
            self._inbox.put(_Abort(unfinished))
        if not self._routes:
            self._idle.set()

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            route = self._routes.get(out.request_id)
            if route is None:  # its client has gone
                continue
            stream, index = route
            stream.push((index, out))
            if out.finished:
                del self._routes[out.request_id]
        if not self._routes:
            self._idle.set()

    def _resolve(self, future: asyncio.Future, error: BaseException | None) -> None:
        if future.done():  # cancelled by its client meanwhile
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def _fail_all(self, error: EngineDeadError) -> None:
        for future in list(self._pending):
            self._resolve(future, error)
        for stream, _ in self._routes.values():
            stream.push(error)
        self._routes.clear()
        self._idle.set()
        self.failed.set()

    # -- engine-thread side ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._drain_inbox(block=not self.engine.has_unfinished_requests()):
                if self.engine.has_unfinished_requests():
                    self._emit(self.engine.step())
        except Exception as err:  # the engine's state is unknown now: fail everything, loudly
            logger.exception("engine thread died")
            self.error = err
            self._loop.call_soon_threadsafe(self._fail_all, EngineDeadError(f"the engine failed: {err!r}"))

    def _drain_inbox(self, block: bool) -> bool:
        """Handle every queued command (waiting for one when `block`); False once told to stop."""
        try:
            command = self._inbox.get(block=block)
        except queue.Empty:
            return True
        while True:
            if isinstance(command, _Stop):
                self._emit(self._abort(sorted(self._live)))
                return False
            if isinstance(command, _Submit):
                self._submit(command)
            elif isinstance(command, _SetSLO):
                self._set_slo(command)
            else:
                self._emit(self._abort(command.request_ids))
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                break
        if self.observer is not None:
            self.observer.observe_state(self._state())
        return True

    def _submit(self, command: _Submit) -> None:
        if self.max_waiting is not None and self.engine.num_waiting + len(command.prompts) > self.max_waiting:
            self._loop.call_soon_threadsafe(self._resolve, command.accepted, QueueFullError(
                f"{self.engine.num_waiting} requests are waiting (--max-waiting {self.max_waiting})"))
            return
        # Text prompts are tokenized by the engine: their length is not known here, so only
        # token prompts (what the server hands over) count.
        tokens = sum(len(p) for p in command.prompts if not isinstance(p, str))
        if not self.engine.admits(tokens, command.slo_class):
            self._loop.call_soon_threadsafe(self._resolve, command.accepted, QueueFullError(
                "the requests queued ahead would delay its first token past the TTFT target", "ttft_unreachable"))
            return
        added: list[str] = []
        try:
            for rid, prompt, params in zip(command.request_ids, command.prompts, command.params):
                self.engine.add_request(prompt, params, request_id=rid,
                                        arrival_time=command.arrival_time, slo_class=command.slo_class)
                added.append(rid)
        except Exception as err:  # this submission alone fails; the engine holds nothing of it
            for rid in added:
                self.engine.abort_request(rid)
            if isinstance(err, InvalidRequestError):
                error: Exception = err
            elif isinstance(err, (ValueError, TypeError)):
                error = InvalidRequestError("prompt", f"the engine refused the request: {err}")
            else:
                logger.exception("request %s failed on admission", command.request_ids[0])
                error = RequestFailedError(f"the request could not be admitted: {err!r}")
            self._loop.call_soon_threadsafe(self._resolve, command.accepted, error)
            return
        self._live.update(added)
        if self.observer is not None:
            self.observer.observe_added([p.max_tokens for p in command.params])
        self._loop.call_soon_threadsafe(self._resolve, command.accepted, None)

    def _set_slo(self, command: _SetSLO) -> None:
        error: Exception | None = None
        if not self.serves_slo:
            error = NoSLOPolicyError(f"the budget policy {type(self.engine.policy).__name__} serves no SLO policy")
        else:
            try:
                self.engine.policy.set_slo(command.slo)
            except ValueError as err:  # the policy refused it and kept the old one
                error = err
        self._loop.call_soon_threadsafe(self._resolve, command.done, error)

    def _abort(self, request_ids: Sequence[str]) -> list[RequestOutput]:
        """Abort requests the engine holds; returns their final outputs (finish reason abort)."""
        finals = (self.engine.abort_request(rid) for rid in request_ids)
        return [f for f in finals if f is not None]

    def _emit(self, outputs: list[RequestOutput]) -> None:
        if not outputs:
            return
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
            if self.observer is not None:
                self.observer.observe_output(out)
        self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _state(self) -> EngineState:
        return self.engine.state()
