"""A client that hangs up aborts its request: the KV blocks go back to the free pool."""

import http.client
import json
import socket

import pytest

LONG = {"model": "dummy:tiny", "prompt": list(range(1, 200)), "max_tokens": 1800, "ignore_eos": True}


@pytest.fixture(scope="module")
def server(serve):
    with serve() as s:
        yield s


def aborted(server):
    return server.metrics().get('adaptive_sarathi:request_success_total{finished_reason=abort}', 0)


def all_blocks_free(server):
    bm = server.engine.scheduler.block_manager
    return bm.num_free_blocks == bm.num_total_blocks and server.server.engine.num_in_flight == 0


def test_dropped_stream_is_aborted_and_frees_its_blocks(server):
    before = aborted(server)
    conn, response = server.open_stream(LONG)
    first = response.readline()
    assert first.startswith(b"data: {")
    assert json.loads(first[6:])["choices"][0]["finish_reason"] is None
    assert server.metrics()["adaptive_sarathi:kv_cache_usage_perc"] > 0
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert server.wait_until(lambda: aborted(server) == before + 1)
    assert server.wait_until(lambda: all_blocks_free(server))
    server.engine.scheduler.check_invariants()
    assert server.metrics()["adaptive_sarathi:kv_cache_usage_perc"] == 0


def test_client_giving_up_on_a_plain_request_aborts_it(server):
    before = aborted(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/v1/completions", body=json.dumps(LONG).encode(),
                 headers={"Content-Type": "application/json"})
    conn.sock.settimeout(0.2)  # give up long before the 1800 tokens are done
    with pytest.raises(TimeoutError):
        conn.getresponse()
    conn.close()
    assert server.wait_until(lambda: aborted(server) == before + 1)
    assert server.wait_until(lambda: all_blocks_free(server))


def test_server_serves_on_after_disconnects(server):
    status, _, body = server.request("POST", "/v1/completions", {**LONG, "max_tokens": 5})
    assert status == 200 and body["usage"]["completion_tokens"] == 5
