"""Prefix caching seen from the API: usage.prompt_tokens_details.cached_tokens (streamed and not),
and the prefix_cache_queries / prefix_cache_hits metrics, with caching on and off (the token-level
parity of outputs is tested on the engine: tests/engine/test_prefix_caching_parity.py)."""

import dataclasses
import json

import pytest

from conftest import TINY

M = "adaptive_sarathi:"
HEADER = [(7 * i) % 50 + 10 for i in range(40)]  # 40 tokens: two full blocks of 16, then 8


def _body(prompt, **extra):
    return {"prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True, **extra}


def _streamed_usage(server, prompt):
    conn, response = server.open_stream(_body(prompt, stream_options={"include_usage": True}))
    events = [line[6:] for line in response.read().decode().splitlines() if line.startswith("data: ")]
    conn.close()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    return chunks[-1]["usage"]


def _serve_turns(server):
    """The header alone, then the header plus new tokens twice (non-streamed, streamed)."""
    status, _, first = server.request("POST", "/v1/completions", _body(HEADER))
    assert status == 200
    status, _, second = server.request("POST", "/v1/completions", _body(HEADER + [3, 4, 5]))
    assert status == 200
    return first, second, _streamed_usage(server, HEADER + [6, 7])


@pytest.mark.parametrize("caching", [True, False])
def test_cached_tokens_are_reported_in_usage_and_metrics(serve, caching):
    args = dataclasses.replace(TINY, enable_prefix_caching=caching)
    with serve(args) as server:
        first, second, streamed_usage = _serve_turns(server)
        metrics = server.metrics()
    expected = 32 if caching else 0  # the header's two full blocks
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": expected}
    assert second["usage"]["prompt_tokens"] == 43
    assert streamed_usage["prompt_tokens_details"] == {"cached_tokens": expected}
    assert streamed_usage["prompt_tokens"] == 42
    if caching:
        # three admissions: 40 + 43 + 42 tokens looked up, two of them hit 32 each
        assert metrics[f"{M}prefix_cache_queries_total"] == 40 + 43 + 42
        assert metrics[f"{M}prefix_cache_hits_total"] == 64
        # the prefill work the hits saved is not counted as processed
        assert metrics[f"{M}iteration_prefill_tokens_sum"] == 40 + 43 + 42 - 64
    else:
        assert metrics[f"{M}prefix_cache_queries_total"] == metrics[f"{M}prefix_cache_hits_total"] == 0
