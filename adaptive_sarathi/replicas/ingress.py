"""The ingress: one OpenAI-compatible HTTP endpoint in front of the replicas.

Generation requests are placed by the routing policy (engine/routing.py) over the replicas'
snapshots, which a background task reads from every replica each poll interval, corrected by what
the ingress itself sent since (requests it has in flight there, prompt tokens not yet past their
first token). Everything else a replica answers (models, tokenize, health, SLO policy reads) goes
to any live replica. The replica's answer is passed through as it comes: same status, headers,
body and stream, so clients see the single-engine API and errors.

Answers the ingress gives itself: 429 `ttft_unreachable` when headroom finds no replica that can
meet the request's TTFT target; 503 `no_replica` while no replica answers; for a replica that
dies during a request, 503 `replica_failed` (nothing sent yet) or, in a stream already under way,
an error event naming the replica, then the end of the stream. Other replicas' requests go on.
GET /metrics: every replica's metrics with a `replica` label, plus the router's own. Every answer a
replica gave carries the header x-replica: its index.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.queue_forecast import ReplicaSnapshot
from adaptive_sarathi.engine.routing import RouteRequest, get_policy
from adaptive_sarathi.replicas.metrics_merge import merge_expositions
from adaptive_sarathi.server.errors import APIError
from adaptive_sarathi.server.slo_class import HEADER as SLO_CLASS_HEADER, request_class

logger = logging.getLogger(__name__)

GENERATE_PATHS = ("/v1/completions", "/v1/chat/completions")
REPLICA_HEADER = "x-replica"  # on every forwarded answer: the index of the replica that served it
_CHARS_PER_TOKEN = 4  # the ingress has no tokenizer: a text prompt's length is estimated from its characters
_CALL_TIMEOUT_S = 5.0  # a snapshot or metrics read that takes longer marks the replica down until it answers


def estimate_prompt_tokens(body: Any) -> int:
    """Prompt tokens of a completions or chat body, estimated without a tokenizer: token-id
    prompts counted exactly, text at ~4 characters a token; 0 for a body it cannot read (the
    replica answers that one's 400). Reads, never mutates, the body."""
    if not isinstance(body, dict):
        return 0
    if "messages" in body:
        messages = body["messages"] if isinstance(body["messages"], list) else []
        chars = 0
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):  # content parts
                chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict)
                             and isinstance(p.get("text"), str))
        return math.ceil(chars / _CHARS_PER_TOKEN)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return math.ceil(len(prompt) / _CHARS_PER_TOKEN)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt):
            return len(prompt)
        return sum(len(p) if isinstance(p, list) else math.ceil(len(p) / _CHARS_PER_TOKEN)
                   for p in prompt if isinstance(p, (str, list)))
    return 0


@dataclass
class _ReplicaView:
    """What the ingress knows of one replica: its last snapshot, whether it answered the last
    poll, and what the ingress sent it that the snapshot may not show yet."""

    handle: Any
    snapshot: ReplicaSnapshot | None = None
    up: bool = False
    in_flight: int = 0
    unstarted_tokens: int = 0  # prompt tokens of in-flight requests whose first byte has not come back

    def routed_snapshot(self) -> ReplicaSnapshot:
        snap = self.snapshot or _EMPTY
        extra = max(0, self.unstarted_tokens - snap.queued_prefill_tokens)
        return replace(snap, overflow_tokens=snap.overflow_tokens + extra,
                       num_outstanding=max(snap.num_outstanding, self.in_flight))


_EMPTY = ReplicaSnapshot(now_s=0.0, prefill_queue=(), overflow_tokens=0, prefill_rate_tps=None,
                         relegates_late=False, tbt_slack_s=math.inf, num_outstanding=0, num_waiting=0,
                         kv_utilization=0.0, targets=None)


class Ingress:
    """Routes over `handles` (Ray Serve handles of EngineReplica deployments, index = replica).
    Call start() on the running event loop before serving `app`, stop() when done."""

    def __init__(self, handles: Sequence[Any], routing: str, slo: SLOPolicy | None, retry_after_s: int = 1,
                 poll_interval_s: float = 0.05, max_body_bytes: int = 1 << 20):
        self.views = [_ReplicaView(h) for h in handles]
        self.routing = routing
        self._route = get_policy(routing)
        self.slo = slo
        self.retry_after_s = retry_after_s
        self.poll_interval_s = poll_interval_s
        self._sequence = 0
        self._next_any = 0
        self._poller: asyncio.Task | None = None
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._routed = Counter("adaptive_sarathi:router_requests", "Generation requests placed on a replica",
                               ("replica", "routing"), registry=registry)
        self._refused = Counter("adaptive_sarathi:router_refused", "Requests refused because no replica is "
                                "forecast to meet their TTFT target (429 ttft_unreachable)", ("slo_class",),
                                registry=registry)
        self._failed = Counter("adaptive_sarathi:router_replica_failures", "Requests that failed because their "
                               "replica died or did not answer", ("replica",), registry=registry)
        self._up = Gauge("adaptive_sarathi:replica_up", "1 while the replica answers the router's polls",
                         ("replica",), registry=registry)
        self._queued = Gauge("adaptive_sarathi:replica_queued_prompt_tokens", "Pending prompt tokens the "
                             "replica holds, as last polled", ("replica",), registry=registry)
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- snapshots --------------------------------------------------------------------------------

    def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    async def poll_once(self) -> None:
        """Read every replica's snapshot once; a replica that fails or times out is down until
        it answers again."""
        async def one(index: int, view: _ReplicaView) -> None:
            try:
                snap = await asyncio.wait_for(view.handle.snapshot.remote(), _CALL_TIMEOUT_S)
            except Exception as err:  # dead, restarting or not yet started: route elsewhere
                if view.up:
                    logger.warning("replica %d stopped answering: %r", index, err)
                view.up = False
            else:
                view.up = True
                if snap is not None:
                    view.snapshot = snap
                    self._queued.labels(str(index)).set(snap.queued_prefill_tokens)
            self._up.labels(str(index)).set(1.0 if view.up else 0.0)

        await asyncio.gather(*(one(i, v) for i, v in enumerate(self.views)))

    async def _poll_forever(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_interval_s)

    def live(self) -> list[int]:
        return [i for i, v in enumerate(self.views) if v.up]

    # -- requests ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and request.path in GENERATE_PATHS:
            return await self._generate(request, body)
        live = self.live()
        if not live:
            return _error(self._no_replica())
        index = live[self._next_any % len(live)]
        self._next_any += 1
        return await self._forward(request, body, index, 0)

    async def _generate(self, request: web.Request, body: bytes) -> web.StreamResponse:
        live = self.live()
        if not live:
            return _error(self._no_replica())
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None  # the replica answers the 400, in the server's words
        tokens = estimate_prompt_tokens(parsed)
        body_class = parsed.get("slo_class") if isinstance(parsed, dict) else None
        try:
            slo_class = request_class(self.slo, body_class if isinstance(body_class, str) else None,
                                      request.headers.get(SLO_CLASS_HEADER))
        except APIError as err:
            return _error(err)
        decision = self._route([self.views[i].routed_snapshot() for i in live],
                               RouteRequest(tokens, slo_class, self._sequence))
        self._sequence += 1
        if decision.replica is None:
            self._refused.labels(slo_class or "").inc()
            return _error(APIError(
                429, f"the server is at capacity (no replica is forecast to serve a first token within the TTFT "
                     f"target of class {slo_class!r}: the best forecast is {decision.predicted_ttft_s:.2f} s): "
                     "retry later", type="rate_limit_error", code="ttft_unreachable",
                headers={"Retry-After": str(self.retry_after_s)}))
        index = live[decision.replica]
        self._routed.labels(str(index), self.routing).inc()
        return await self._forward(request, body, index, tokens)

    async def _forward(self, request: web.Request, body: bytes, index: int, tokens: int) -> web.StreamResponse:
        view = self.views[index]
        view.in_flight += 1
        view.unstarted_tokens += tokens
        started = False

        def first_bytes() -> None:
            nonlocal started
            if not started:
                started = True
                view.unstarted_tokens -= tokens

        path = request.rel_url.raw_path_qs if hasattr(request.rel_url, "raw_path_qs") else str(request.rel_url)
        stream = view.handle.options(stream=True).forward.remote(request.method, path, list(request.headers.items()),
                                                                 body)
        response: web.StreamResponse | None = None
        try:
            head = await stream.__anext__()
            headers = dict(head["headers"])
            headers[REPLICA_HEADER] = str(index)
            if headers.get("Content-Type", "").startswith("text/event-stream"):
                response = web.StreamResponse(status=head["status"], headers=headers)
                await response.prepare(request)
                async for chunk in stream:
                    first_bytes()
                    await response.write(chunk)
                await response.write_eof()
                return response
            chunks = [chunk async for chunk in stream]
            return web.Response(status=head["status"], headers=headers, body=b"".join(chunks))
        except asyncio.CancelledError:  # the client hung up: closing the stream aborts its requests
            stream.cancel()
            raise
        except (ConnectionResetError, StopAsyncIteration) as err:
            if isinstance(err, ConnectionResetError):
                stream.cancel()
                return response
            failure = APIError(503, f"replica {index} closed the request without an answer: retry",
                               type="service_unavailable_error", code="replica_failed")
            return await self._failed_answer(request, response, index, failure)
        except Exception as err:  # the replica died (RayActorError) or its call failed
            logger.warning("replica %d failed a request: %r", index, err)
            view.up = False
            failure = APIError(503, f"replica {index} failed while serving this request ({type(err).__name__}): "
                                    "retry; the other replicas are unaffected",
                               type="service_unavailable_error", code="replica_failed",
                               headers={"Retry-After": str(self.retry_after_s)})
            return await self._failed_answer(request, response, index, failure)
        finally:
            first_bytes()
            view.in_flight -= 1

    async def _failed_answer(self, request: web.Request, response: web.StreamResponse | None, index: int,
                             failure: APIError) -> web.StreamResponse:
        self._failed.labels(str(index)).inc()
        if response is None:
            return _error(failure)
        # Too late for a status code: say it in the stream, as one engine does when it fails.
        try:
            await response.write(b"data: " + json.dumps(failure.body(), separators=(",", ":")).encode() + b"\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response

    def _no_replica(self) -> APIError:
        return APIError(503, "no replica is answering (starting, or restarting after a failure): retry shortly",
                        type="service_unavailable_error", code="no_replica",
                        headers={"Retry-After": str(self.retry_after_s)})

    # -- metrics ----------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        texts = {}

        async def one(index: int) -> None:
            try:
                parts = await asyncio.wait_for(_collect(self.views[index].handle, "/metrics"), _CALL_TIMEOUT_S)
            except Exception:  # a replica down for the scrape shows as replica_up 0
                return
            texts[str(index)] = parts

        await asyncio.gather(*(one(i) for i in self.live()))
        merged = merge_expositions({k: texts[k] for k in sorted(texts, key=int)})
        own = generate_latest(self.registry).decode()
        return web.Response(body=(merged + own).encode(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _collect(handle, path: str) -> str:
    stream = handle.options(stream=True).forward.remote("GET", path, [], b"")
    head = await stream.__anext__()
    if head["status"] != 200:
        raise RuntimeError(f"GET {path} answered {head['status']}")
    return b"".join([chunk async for chunk in stream]).decode()


def _error(err: APIError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)
