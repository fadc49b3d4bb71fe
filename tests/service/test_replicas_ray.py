"""Two replicas of the embedded model on a local Ray cluster behind the ingress.

Bound: every wait below has its own timeout (replicas up: 240 s, one request: 60 s, the restart
of a killed replica: 120 s); the whole test stays under ~8 minutes on a 2-core host, typically
about 90 s (Ray's start and two model loads are most of it).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("ray.serve", reason="needs the replicas extra: pip install 'adaptive-sarathi[replicas]'")

from adaptive_sarathi.engine.factory import EngineArgs  # noqa: E402
from adaptive_sarathi.replicas import ReplicaConfig, ReplicaSet  # noqa: E402
from adaptive_sarathi.replicas.ingress import REPLICA_HEADER  # noqa: E402
from adaptive_sarathi.server.server import ServerArgs  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.embedded_model]

START_TIMEOUT_S, REQUEST_TIMEOUT_S, RESTART_TIMEOUT_S = 240.0, 60.0, 120.0


@pytest.fixture(scope="module")
def cluster():
    import ray

    config = ReplicaConfig(EngineArgs(device="cpu", num_threads=1, max_model_len=512, num_kv_blocks=256,
                                      token_budget=128),
                           ServerArgs(port=0, shutdown_timeout_s=2.0), num_replicas=2, routing="round_robin")
    replicas = ReplicaSet(config)
    loop = asyncio.new_event_loop()
    port = loop.run_until_complete(asyncio.wait_for(replicas.start(), START_TIMEOUT_S))
    yield replicas, loop, f"http://127.0.0.1:{port}"
    loop.run_until_complete(asyncio.wait_for(replicas.stop(), 120))
    loop.close()
    assert not ray.is_initialized()




def test_openai_client_streaming_and_not(cluster):
    replicas, loop, base = cluster
    from openai import AsyncOpenAI

    async def go():
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key="none", timeout=REQUEST_TIMEOUT_S, max_retries=0)
        models = await client.models.list()
        model = models.data[0].id
        done = await client.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                               temperature=0)
        chunks = [c async for c in await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, stream=True)]
        bad = None
        try:
            await client.completions.create(model=model, prompt="hi", max_tokens=-1)
        except Exception as err:  # the replica's own 400, passed through
            bad = err
        await client.close()
        return done, chunks, models, bad

    done, chunks, models, bad = loop.run_until_complete(go())
    assert done.choices[0].text and done.choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") or not chunks[-1].choices
    assert models.data
    assert getattr(bad, "status_code", None) == 400 and "max_tokens" in str(bad)


def test_metrics_carry_a_replica_label_per_replica(cluster):
    replicas, loop, base = cluster
    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/metrics") as r:
                return r.status, await r.text()

    status, text = loop.run_until_complete(go())
    assert status == 200
    for i in ("0", "1"):
        assert f'replica="{i}"' in text and f'engine="{i}"' in text
    assert text.count("# TYPE adaptive_sarathi:num_requests_waiting gauge") == 1
    assert "adaptive_sarathi:kv_cache_usage_perc" in text
    assert 'adaptive_sarathi:replica_up{replica="1"} 1.0' in text


def test_killing_one_replica_fails_only_its_requests_and_ray_restarts_it(cluster):
    import aiohttp
    import ray

    replicas, loop, base = cluster
    victim_name = replicas.replica_actor_names()[1]

    async def stream_one(session, k, started: asyncio.Event, n_started: list):
        body = {"prompt": f"Count from {k}:", "max_tokens": 120, "stream": True, "ignore_eos": True,
                "temperature": 0}
        async with session.post(f"{base}/v1/completions", json=body) as r:
            replica = r.headers[REPLICA_HEADER]
            events, first = [], True
            async for line in r.content:
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                if first:
                    first = False
                    n_started.append(k)
                    if len(n_started) == 4:
                        started.set()
                payload = line[len(b"data: "):]
                events.append(payload if payload == b"[DONE]" else json.loads(payload))
            return replica, events

    async def go():
        started, n_started = asyncio.Event(), []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S * 3)) as session:
            tasks = [asyncio.create_task(stream_one(session, k, started, n_started)) for k in range(4)]
            await asyncio.wait_for(started.wait(), REQUEST_TIMEOUT_S)
            ray.kill(ray.get_actor(victim_name, namespace="serve"), no_restart=False)
            return await asyncio.wait_for(asyncio.gather(*tasks), REQUEST_TIMEOUT_S * 3)

    results = loop.run_until_complete(go())
    assert sorted(r for r, _ in results) == ["0", "0", "1", "1"]  # round robin: two on each
    for replica, events in results:
        if replica == "0":  # untouched: every token, then the normal end
            assert events[-1] == b"[DONE]"
            assert events[-2]["choices"][0]["finish_reason"] == "length"
            assert sum(len(e["choices"][0]["text"]) > 0 for e in events[:-1]) > 1
        else:  # its replica died: a clear error event ends the stream
            assert events[-1] != b"[DONE]"
            error = events[-1]["error"]
            assert error["code"] == "replica_failed" and "replica 1" in error["message"]

    async def wait_restart():
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while time.monotonic() < deadline:
            live = replicas.ingress.live()
            if live == [0, 1]:
                return True
            await asyncio.sleep(0.5)
        return False

    assert loop.run_until_complete(wait_restart()), "Ray did not bring the killed replica back"
    assert replicas.replica_actor_names()[1] != victim_name

    async def after():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
            served = set()
            for _ in range(2):
                async with session.post(f"{base}/v1/completions", json={"prompt": "Hello", "max_tokens": 4}) as r:
                    assert r.status == 200, await r.text()
                    served.add(r.headers[REPLICA_HEADER])
            return served

    assert loop.run_until_complete(after()) == {"0", "1"}
