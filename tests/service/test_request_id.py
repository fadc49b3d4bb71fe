"""X-Request-Id: the client's id becomes the engine request id (suffixed per sequence when a
request has several), is echoed, and a bad or in-flight id is a 400 naming the header."""

import pytest

from conftest import record_added

COMPLETIONS = "/v1/completions"
BODY = {"prompt": [1, 2, 3], "max_tokens": 3, "ignore_eos": True}


@pytest.fixture(scope="module")
def server(serve):
    with serve() as s:
        yield s


def test_header_is_the_engine_request_id(server):
    added = record_added(server)
    status, headers, reply = server.request("POST", COMPLETIONS, BODY, headers={"X-Request-Id": "trace-1"})
    assert status == 200 and headers["X-Request-Id"] == "trace-1"
    assert [r.request_id for r in added] == ["trace-1"]
    assert reply["id"].startswith("cmpl-")  # the body's id stays OpenAI-shaped


def test_several_sequences_get_one_suffix_each(server):
    added = record_added(server)
    body = {**BODY, "prompt": [[1, 2], [3, 4]], "n": 2}
    status, headers, reply = server.request("POST", COMPLETIONS, body, headers={"X-Request-Id": "batch"})
    assert status == 200 and headers["X-Request-Id"] == "batch"
    assert [r.request_id for r in added] == ["batch-0", "batch-1", "batch-2", "batch-3"]
    assert [r.prompt_token_ids for r in added] == [[1, 2], [1, 2], [3, 4], [3, 4]]
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]


@pytest.mark.parametrize("value", ["x" * 257, "caf\u00e9"])
def test_bad_header_is_a_400_naming_it(server, value):
    status, headers, reply = server.request("POST", COMPLETIONS, BODY, headers={"X-Request-Id": value})
    assert status == 400 and reply["error"]["param"] == "X-Request-Id", reply
    assert "X-Request-Id" not in headers


def test_an_id_in_flight_is_refused_and_the_first_request_goes_on(server):
    conn, response = server.open_stream({**BODY, "max_tokens": 400}, headers={"X-Request-Id": "dup"})
    status, _, reply = server.request("POST", COMPLETIONS, BODY, headers={"X-Request-Id": "dup"})
    events = [e for e in response.read().split(b"\n\n") if e.startswith(b"data: {")]
    conn.close()
    assert status == 400 and reply["error"]["param"] == "X-Request-Id", reply
    assert len(events) == 400
