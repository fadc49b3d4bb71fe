"""The replicas' ingress with stand-in replica handles (no Ray): routing, refusals, failures,
metrics merging, prompt-length estimates and the deployment's resource request."""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp
import pytest
from aiohttp import web

from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.factory import EngineArgs
from adaptive_sarathi.engine.queue_forecast import ReplicaSnapshot
from adaptive_sarathi.replicas.config import ReplicaConfig
from adaptive_sarathi.replicas.ingress import REPLICA_HEADER, Ingress, estimate_prompt_tokens
from adaptive_sarathi.replicas.metrics_merge import merge_expositions
from adaptive_sarathi.server.server import ServerArgs

TIERED = load_slo_policy("llama-3-8b-h100-tiered")


class _Remote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class FakeHandle:
    """Answers like an EngineReplica: a snapshot, and forward() as a stream of head then chunks.
    die_after: chunks sent before the replica 'dies' (raises), None: never."""

    def __init__(self, snap: ReplicaSnapshot | None, chunks=(b"data: {}\n\n", b"data: [DONE]\n\n"),
                 content_type="text/event-stream", die_after=None):
        self.snap, self.chunks, self.content_type, self.die_after = snap, list(chunks), content_type, die_after
        self.forwarded: list[tuple[str, str]] = []
        self.snapshot = _Remote(self._snapshot)
        self.forward = _Remote(self._forward)

    def options(self, stream=False):
        return self

    async def _snapshot(self):
        return self.snap

    def _forward(self, method, path, headers, body):
        self.forwarded.append((method, path))
        return _Stream(self)


class _Stream:
    def __init__(self, handle: FakeHandle):
        self.handle, self.sent, self.cancelled = handle, -1, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        h = self.handle
        if self.sent == -1:
            self.sent = 0
            return {"status": 200, "headers": [("Content-Type", h.content_type)]}
        if h.die_after is not None and self.sent >= h.die_after:
            raise RuntimeError("The actor died unexpectedly before finishing this task.")
        if self.sent >= len(h.chunks):
            raise StopAsyncIteration
        self.sent += 1
        await asyncio.sleep(0)
        return h.chunks[self.sent - 1]

    def cancel(self):
        self.cancelled = True


def snap(queued=0, rate=1000.0, outstanding=0):
    return ReplicaSnapshot(now_s=0.0, prefill_queue=((math.inf, queued, 8),) if queued else (), overflow_tokens=0,
                           prefill_rate_tps=rate, relegates_late=True, tbt_slack_s=math.inf,
                           num_outstanding=outstanding, num_waiting=0, kv_utilization=0.25,
                           targets=TIERED.as_targets())


async def _serve(ingress: Ingress, requests):
    await ingress.poll_once()
    runner = web.AppRunner(ingress.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            return [await r(session, f"http://127.0.0.1:{port}") for r in requests]
    finally:
        await runner.cleanup()


def post(path, body, headers=None):
    async def go(session, base):
        async with session.post(base + path, json=body, headers=headers or {}) as r:
            return r.status, dict(r.headers), await r.read()
    return go


def run(ingress, *requests):
    return asyncio.run(_serve(ingress, requests))


def test_headroom_places_on_the_replica_with_slack_and_refuses_when_none_has_any():
    busy, free = FakeHandle(snap(queued=5000)), FakeHandle(snap(queued=100))
    ingress = Ingress([busy, free], "headroom", TIERED)
    (status, headers, _), = run(ingress, post("/v1/completions", {"prompt": [1] * 50, "stream": True}))
    assert status == 200 and headers[REPLICA_HEADER] == "1" and free.forwarded and not busy.forwarded
    full = Ingress([FakeHandle(snap(queued=5000)), FakeHandle(snap(queued=4000))], "headroom", TIERED)
    # The same queues meet a batch request's 30 s target.
    (status, headers, body), (batch_status, _, _) = run(
        full, post("/v1/completions", {"prompt": "hi"}, {"x-slo-class": "interactive"}),
        post("/v1/completions", {"prompt": "hi", "slo_class": "batch"}))
    error = json.loads(body)["error"]
    assert status == 429 and error["code"] == "ttft_unreachable" and headers["Retry-After"] == "1"
    assert "'interactive'" in error["message"] and "4.00 s" in error["message"]
    assert batch_status == 200


def test_an_unknown_class_is_the_servers_own_400():
    ingress = Ingress([FakeHandle(snap())], "headroom", TIERED)
    (status, _, body), = run(ingress, post("/v1/completions", {"prompt": "hi", "slo_class": "gold"}))
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == "slo_class" and "interactive" in error["message"]


def test_a_replica_that_dies_mid_stream_ends_its_stream_with_a_clear_error():
    dying = FakeHandle(snap(), chunks=[b"data: {\"a\":1}\n\n"] * 5, die_after=2)
    ingress = Ingress([dying], "round_robin", None)
    (status, _, body), = run(ingress, post("/v1/completions", {"prompt": "hi", "stream": True}))
    events = [line for line in body.split(b"\n\n") if line]
    assert status == 200 and len(events) == 3
    error = json.loads(events[-1][len(b"data: "):])["error"]
    assert error["code"] == "replica_failed" and "replica 0" in error["message"]
    assert not ingress.views[0].up  # not routed to until a poll finds it again


def test_a_replica_that_dies_before_answering_is_a_503_and_others_serve_on():
    dead = FakeHandle(snap(), content_type="application/json", die_after=0)
    alive = FakeHandle(snap(), chunks=[b'{"ok": true}'], content_type="application/json")
    ingress = Ingress([dead, alive], "round_robin", None)
    (s0, _, b0), (s1, h1, b1) = run(ingress, post("/v1/completions", {"prompt": "a"}),
                                    post("/v1/completions", {"prompt": "b"}))
    assert s0 == 503 and json.loads(b0)["error"]["code"] == "replica_failed"
    assert s1 == 200 and h1[REPLICA_HEADER] == "1" and json.loads(b1) == {"ok": True}


def test_no_live_replica_is_a_503_naming_why():
    class Down(FakeHandle):
        async def _snapshot(self):
            raise RuntimeError("actor died")

    ingress = Ingress([Down(None)], "least_outstanding", None)
    (status, _, body), = run(ingress, post("/v1/chat/completions", {"messages": []}))
    assert status == 503 and json.loads(body)["error"]["code"] == "no_replica"


def test_least_outstanding_counts_what_the_ingress_sent_since_the_snapshot():
    a, b = FakeHandle(snap(outstanding=0)), FakeHandle(snap(outstanding=1))
    ingress = Ingress([a, b], "least_outstanding", None)
    ingress.views[0].in_flight = 3  # sent by the ingress, not yet in replica 0's snapshot
    asyncio.run(ingress.poll_once())
    assert ingress.views[0].routed_snapshot().num_outstanding == 3
    (_, headers, _), = run(ingress, post("/v1/completions", {"prompt": "x"}))
    assert headers[REPLICA_HEADER] == "1"


def test_merged_metrics_keep_one_family_header_and_label_every_sample():
    one = ('# HELP adaptive_sarathi:num_requests_waiting Requests waiting\n'
           '# TYPE adaptive_sarathi:num_requests_waiting gauge\n'
           'adaptive_sarathi:num_requests_waiting{engine="0",model_name="m"} 2.0\n'
           '# HELP adaptive_sarathi:prompt_tokens_total Prompt tokens\n'
           '# TYPE adaptive_sarathi:prompt_tokens_total counter\n'
           'adaptive_sarathi:prompt_tokens_total{engine="0",model_name="m"} 10.0\n')
    two = one.replace('engine="0"', 'engine="1"').replace(" 2.0", " 5.0")
    merged = merge_expositions({"0": one, "1": two})
    assert merged.count("# TYPE adaptive_sarathi:num_requests_waiting gauge") == 1
    assert 'adaptive_sarathi:num_requests_waiting{engine="1",model_name="m",replica="1"} 5.0' in merged
    assert "# TYPE adaptive_sarathi:prompt_tokens_total counter" in merged
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(merged)}
    assert [s.labels["replica"] for s in families["adaptive_sarathi:prompt_tokens"].samples] == ["0", "1"]


def test_prompt_length_estimates():
    assert estimate_prompt_tokens({"prompt": [5, 6, 7]}) == 3
    assert estimate_prompt_tokens({"prompt": "x" * 41}) == 11
    assert estimate_prompt_tokens({"prompt": ["abcd", [1, 2]]}) == 3
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": "y" * 8},
                                                {"role": "user", "content": [{"type": "text", "text": "zzzz"}]}]}) == 3
    assert estimate_prompt_tokens("not a body") == 0


def test_replica_resources_follow_the_engine():
    cpu = ReplicaConfig(EngineArgs(device="cpu", num_threads=2), ServerArgs())
    assert cpu.actor_options(gpu_available=True) == {"num_cpus": 2.0, "num_gpus": 0.0}
    tp = ReplicaConfig(EngineArgs(tensor_parallel_size=2), ServerArgs())
    assert tp.actor_options(gpu_available=True) == {"num_cpus": 1.0, "num_gpus": 2.0}
    half = ReplicaConfig(EngineArgs(device="cuda"), ServerArgs(), num_gpus_per_replica=0.5)
    assert half.actor_options(gpu_available=True)["num_gpus"] == 0.5
    with pytest.raises(ValueError, match="--replicas 0 is invalid"):
        ReplicaConfig(EngineArgs(), ServerArgs(), num_replicas=0)
    with pytest.raises(ValueError, match="routing='nearest' is unknown"):
        ReplicaConfig(EngineArgs(), ServerArgs(), routing="nearest")
