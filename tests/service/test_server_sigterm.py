"""SIGTERM: the server stops taking requests, ends in-flight streams with a finish reason and
exits 0."""

import http.client
import json
import re
import signal
import subprocess
import sys

import pytest


def start_server(*flags):
    proc = subprocess.Popen([sys.executable, "-m", "adaptive_sarathi.cli", "serve", "--model", "dummy:tiny",
                             "--port", "0", "--num-kv-blocks", "256", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"server did not start: {line}{proc.stderr.read()}")
    return proc, int(match.group(1))


def open_stream(port, max_tokens):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"prompt": [1, 2, 3], "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    return response


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


def events(response):
    return [json.loads(e.strip()[6:]) for e in response.read().split(b"\n\n") if e.strip().startswith(b"data: {")]


def test_sigterm_aborts_in_flight_streams_and_exits_0():
    proc, port = start_server("--shutdown-timeout", "0")
    try:
        response = open_stream(port, max_tokens=2000)
        assert response.readline().startswith(b"data: {")  # generation is under way
        proc.send_signal(signal.SIGTERM)
        rest = events(response)
        assert rest[-1]["choices"][0]["finish_reason"] == "abort"
        assert all(e["choices"][0]["finish_reason"] is None for e in rest[:-1])
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


def test_sigterm_lets_in_flight_streams_finish_within_the_grace_period():
    proc, port = start_server("--shutdown-timeout", "30")
    try:
        response = open_stream(port, max_tokens=300)
        assert response.readline().startswith(b"data: {")
        proc.send_signal(signal.SIGTERM)
        assert get(port, "/health") == 503  # readiness fails at once
        assert get(port, "/health/live") == 200  # liveness holds while streams drain
        rest = events(response)
        assert rest[-1]["choices"][0]["finish_reason"] == "length"
        assert len(rest) == 300 - 1
        assert proc.wait(timeout=30) == 0
        assert "shutting down (1 requests in flight)" in proc.stderr.read()
    finally:
        proc.kill()
