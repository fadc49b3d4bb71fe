"""Fixtures that run the real server on a loopback port inside the test process, and talk raw HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.loaders.default_model import DEFAULT_NAME
from adaptive_sarathi.server import Server, ServerArgs

# The random tiny model: token-id prompts only, a step takes about a millisecond on CPU.
TINY = EngineArgs(model="dummy:tiny", num_kv_blocks=512, token_budget=128, max_chunk=64)


class RunningServer:
    """A Server on its own event loop in a background thread; `url` is its base address."""

    def __init__(self, server: Server):
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-server", daemon=True)
        self._thread.start()
        self.port = self._call(server.start())
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def engine(self):
        """The LLMEngine (read it only while no request is in flight)."""
        return self.server.engine.engine

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=120)

    def stop(self) -> None:
        self._call(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """One HTTP exchange; `body` is sent as JSON unless it is bytes. Returns status, headers
        and the decoded JSON body (the text when it is not JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode()
        return response.status, dict(response.headers), payload

    def open_stream(self, body: dict, headers: dict[str, str] | None = None):
        """POST a streaming request and return (connection, response) once the headers are in."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True}).encode(),
                     headers={"Content-Type": "application/json", **(headers or {})})
        return conn, conn.getresponse()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, parsed by prometheus-client, keyed by name (and the labels
        other than model_name and engine, as name{k=v}). A label whose value is "" is left out of
        the key, as Prometheus treats it as absent (e.g. slo_class="" of requests without a class)."""
        status, _, text = self.request("GET", "/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model_name", "engine") and v)
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples


    @staticmethod
    def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
        """Poll `predicate` until it is true or the timeout passes; returns its last value."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return bool(predicate())
            time.sleep(interval_s)
        return True


def record_added(server) -> list:
    """The Requests the engine's scheduler is handed from now on (appended on the engine thread)."""
    scheduler = server.engine.scheduler
    added, add = [], scheduler.add_request

    def recording(request):
        added.append(request)
        return add(request)

    scheduler.add_request = recording
    return added


@contextmanager
def running_server(engine_args: EngineArgs | None = None, **server_args) -> Iterator[RunningServer]:
    """Build the engine (default: the tiny model), serve it on a free loopback port with
    ServerArgs(**server_args), stop it on exit."""
    engine_args = engine_args or TINY
    engine = create_engine(engine_args)
    server = Server(engine, ServerArgs(port=0, **server_args), engine_args.model or DEFAULT_NAME)
    running = RunningServer(server)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def serve():
    """`with serve(engine_args=None, **server_args) as server:` runs a server for a block."""
    return running_server
