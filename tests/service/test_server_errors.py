"""Bad input gets the right status and an OpenAI error body naming the field; nothing else is
disturbed. Also authentication, the body size limit and 429 when the waiting queue is full."""

import json

import pytest

from adaptive_sarathi.engine.factory import EngineArgs

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
GOOD = {"model": "dummy:tiny", "prompt": [1, 2, 3], "max_tokens": 3, "ignore_eos": True}
USER = [{"role": "user", "content": "hi"}]


def good(**changes):
    return {**GOOD, **changes}


BAD_REQUESTS = [
    # (case, path, body, status, param)
    ("malformed JSON", COMPLETIONS, b'{"prompt": [1, 2', 400, None),
    ("NaN is not a number", COMPLETIONS, b'{"prompt": [1], "temperature": NaN}', 400, "temperature"),
    ("body not UTF-8", COMPLETIONS, b'{"prompt": "\xff\xfe"}', 400, None),
    ("absurdly nested JSON", COMPLETIONS, b"[" * 100_000 + b"]" * 100_000, 400, None),
    ("body not an object", COMPLETIONS, [1, 2, 3], 400, None),
    ("prompt missing", COMPLETIONS, {"max_tokens": 3}, 400, "prompt"),
    ("prompt a number", COMPLETIONS, good(prompt=42), 400, "prompt"),
    ("prompt empty list", COMPLETIONS, good(prompt=[]), 400, "prompt"),
    ("prompt mixes ids and text", COMPLETIONS, good(prompt=[1, "a"]), 400, "prompt"),
    ("prompt of booleans", COMPLETIONS, good(prompt=[True, False]), 400, "prompt"),
    ("token id outside the vocabulary", COMPLETIONS, good(prompt=[1, 100_000]), 400, "prompt"),
    ("prompt over the context window", COMPLETIONS, good(prompt=[7] * 3000), 400, "prompt"),
    ("text prompt for a model without tokenizer", COMPLETIONS, good(prompt="hello"), 400, "prompt"),
    ("max_tokens zero", COMPLETIONS, good(max_tokens=0), 400, "max_tokens"),
    ("max_tokens a string", COMPLETIONS, good(max_tokens="10"), 400, "max_tokens"),
    ("max_completion_tokens negative", COMPLETIONS, good(max_completion_tokens=-1), 400, "max_completion_tokens"),
    ("temperature too high", COMPLETIONS, good(temperature=3.5), 400, "temperature"),
    ("temperature a string", COMPLETIONS, good(temperature="hot"), 400, "temperature"),
    ("top_p zero", COMPLETIONS, good(top_p=0), 400, "top_p"),
    ("top_p above one", COMPLETIONS, good(top_p=1.5), 400, "top_p"),
    ("n zero", COMPLETIONS, good(n=0), 400, "n"),
    ("n a float", COMPLETIONS, good(n=2.0), 400, "n"),
    ("n times prompts over the limit", COMPLETIONS, good(prompt=[[1]] * 40, n=2), 400, "n"),
    ("stream not a boolean", COMPLETIONS, good(stream="yes"), 400, "stream"),
    ("stream_options without stream", COMPLETIONS, good(stream_options={"include_usage": True}), 400,
     "stream_options"),
    ("include_usage not a boolean", COMPLETIONS, good(stream=True, stream_options={"include_usage": "y"}), 400,
     "stream_options"),
    ("stop a number", COMPLETIONS, good(stop=5), 400, "stop"),
    ("stop an empty string", COMPLETIONS, good(stop=[""]), 400, "stop"),
    ("stop strings without a tokenizer", COMPLETIONS, good(stop="x"), 400, "stop"),
    ("seed a float", COMPLETIONS, good(seed=1.5), 400, "seed"),
    ("ignore_eos not a boolean", COMPLETIONS, good(ignore_eos="yes"), 400, "ignore_eos"),
    ("logprobs above the most alternatives", COMPLETIONS, good(logprobs=21), 400, "logprobs"),
    ("logprobs a boolean on completions", COMPLETIONS, good(logprobs=True), 400, "logprobs"),
    ("chat logprobs a number", CHAT, {"messages": USER, "logprobs": 3}, 400, "logprobs"),
    ("top_logprobs without logprobs", CHAT, {"messages": USER, "top_logprobs": 2}, 400, "top_logprobs"),
    ("top_logprobs on completions", COMPLETIONS, good(top_logprobs=2), 400, "top_logprobs"),
    ("presence_penalty out of range", COMPLETIONS, good(presence_penalty=2.5), 400, "presence_penalty"),
    ("frequency_penalty a string", COMPLETIONS, good(frequency_penalty="x"), 400, "frequency_penalty"),
    ("repetition_penalty zero", COMPLETIONS, good(repetition_penalty=0), 400, "repetition_penalty"),
    ("min_tokens above max_tokens", COMPLETIONS, good(min_tokens=4), 400, "min_tokens"),
    ("min_tokens negative", COMPLETIONS, good(min_tokens=-1), 400, "min_tokens"),
    ("JSON mode on a model without tokenizer", COMPLETIONS, good(response_format={"type": "json_object"}), 400,
     "response_format"),
    ("response_format json_schema", COMPLETIONS,
     good(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}), 400, "response_format"),
    ("response_format not an object", COMPLETIONS, good(response_format="json"), 400, "response_format"),
    ("best_of above one", COMPLETIONS, good(best_of=2), 400, "best_of"),
    ("tools", CHAT, {"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ("model not a string", COMPLETIONS, good(model=42), 400, "model"),
    ("unknown model", COMPLETIONS, good(model="gpt-4"), 404, "model"),
    ("messages missing", CHAT, {"model": "dummy:tiny"}, 400, "messages"),
    ("messages not a list", CHAT, {"messages": "hi"}, 400, "messages"),
    ("message content a number", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages"),
    ("message without role", CHAT, {"messages": [{"content": "hi"}]}, 400, "messages"),
    ("chat on a model without chat template", CHAT, {"messages": USER}, 400, "messages"),
    ("chat max_tokens negative", CHAT, {"messages": USER, "max_tokens": -5}, 400, "max_tokens"),
    ("unknown route", "/v1/embeddings", {"input": "x"}, 404, None),
    # Numbers no float can hold, or that a float conversion would overflow on.
    ("temperature a huge integer", COMPLETIONS, b'{"prompt": [1], "temperature": 1' + b"0" * 400 + b"}", 400,
     "temperature"),
    ("top_p a huge integer", COMPLETIONS, good(top_p=10 ** 400), 400, "top_p"),
    ("temperature -inf", COMPLETIONS, b'{"prompt": [1], "temperature": -1e400}', 400, "temperature"),
    ("top_p 1e308", COMPLETIONS, good(top_p=1e308), 400, "top_p"),
    ("seed beyond 64 bits", COMPLETIONS, good(seed=2 ** 70), 400, "seed"),
    ("max_tokens a huge integer", COMPLETIONS, good(max_tokens=10 ** 300), 400, "max_tokens"),
    ("token id a huge integer", COMPLETIONS, good(prompt=[1, 10 ** 30]), 400, "prompt"),
    # Fields that would otherwise be accepted and ignored.
    ("top_k a string", COMPLETIONS, good(top_k="banana"), 400, "top_k"),
    ("top_k below -1", COMPLETIONS, good(top_k=-2), 400, "top_k"),
    ("stop_token_ids not ids", COMPLETIONS, good(stop_token_ids=["a"]), 400, "stop_token_ids"),
    ("unknown field", COMPLETIONS, good(typical_p=0.9), 400, "typical_p"),
    ("legacy functions", CHAT, {"messages": USER, "functions": [{"name": "f"}]}, 400, "functions"),
    ("tool_choice", CHAT, {"messages": USER, "tool_choice": "auto"}, 400, "tool_choice"),
    ("parallel_tool_calls", CHAT, {"messages": USER, "parallel_tool_calls": False}, 400, "parallel_tool_calls"),
    ("max_tokens past the context window", COMPLETIONS, good(max_tokens=2048), 400, "max_tokens"),
    ("max_tokens plus prompt past the context window", COMPLETIONS, good(prompt=[7] * 2000, max_tokens=100),
     400, "max_tokens"),
    # Bounds on the work of one request.
    ("too many prompts", COMPLETIONS, good(prompt=[[1]] * 2000), 400, "prompt"),
    ("too many text prompts", COMPLETIONS, good(prompt=["x"] * 2000), 400, "prompt"),
]


@pytest.fixture(scope="module")
def server(serve):
    with serve() as s:
        yield s


def assert_error_body(body, status, param):
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    assert error["message"] and len(error["message"]) < 500
    if param is not None:
        assert param.split(".")[0] in error["message"], error["message"]


@pytest.mark.parametrize("case,path,body,status,param", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_is_refused_naming_the_field(server, case, path, body, status, param):
    got_status, _, got_body = server.request("POST", path, body)
    assert got_status == status, got_body
    assert_error_body(got_body, status, param)
    got_status, _, reply = server.request("POST", COMPLETIONS, GOOD)
    assert got_status == 200 and reply["usage"]["completion_tokens"] == 3


def test_bad_requests_leave_a_running_stream_alone(server):
    conn, response = server.open_stream(good(max_tokens=600))
    for _, path, body, status, _ in BAD_REQUESTS:
        assert server.request("POST", path, body)[0] == status
    events = [line for line in response.read().split(b"\n\n") if line.startswith(b"data: {")]
    conn.close()
    assert len(events) == 600
    assert json.loads(events[-1][6:])["choices"][0]["finish_reason"] == "length"
    bm = server.engine.scheduler.block_manager
    assert bm.num_free_blocks == bm.num_total_blocks


def test_wrong_method_is_405(server):
    status, _, body = server.request("GET", COMPLETIONS)
    assert status == 405 and "error" in body


@pytest.fixture(scope="module")
def guarded(serve):
    engine = EngineArgs(model="dummy:tiny", num_kv_blocks=512, max_num_seqs=1)
    with serve(engine, api_key="secret", max_waiting=1, max_body_bytes=4096) as s:
        yield s


AUTH = {"Authorization": "Bearer secret"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}])
def test_api_key_is_required_on_v1(guarded, headers):
    status, _, body = guarded.request("POST", COMPLETIONS, GOOD, headers=headers)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert guarded.request("GET", "/v1/models", headers=headers)[0] == 401
    assert guarded.request("GET", "/health")[0] == 200  # probes and scrapers need no key
    assert guarded.request("GET", "/metrics")[0] == 200
    assert guarded.request("POST", COMPLETIONS, GOOD, headers=AUTH)[0] == 200


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_case_insensitive(guarded, scheme):
    assert guarded.request("POST", COMPLETIONS, GOOD, headers={"Authorization": f"{scheme} secret"})[0] == 200


def test_another_scheme_with_the_right_key_is_refused(guarded):
    assert guarded.request("GET", "/v1/models", headers={"Authorization": "Basic secret"})[0] == 401


def test_body_over_the_limit_is_413(guarded):
    status, _, body = guarded.request("POST", COMPLETIONS, good(prompt=[5] * 2000), headers=AUTH)
    assert status == 413 and "error" in body


def test_full_waiting_queue_answers_429_with_retry_after(guarded):
    # max_num_seqs=1: the first stream runs, the second waits, so the queue (max 1) is full.
    def gauge(name):
        return guarded.metrics()[f"adaptive_sarathi:num_requests_{name}"]

    running = guarded.open_stream(good(max_tokens=2000), headers=AUTH)
    assert guarded.wait_until(lambda: gauge("running") == 1)
    waiting = guarded.open_stream(good(max_tokens=2000), headers=AUTH)
    assert running[1].status == waiting[1].status == 200
    assert guarded.wait_until(lambda: gauge("waiting") == 1)
    status, headers, body = guarded.request("POST", COMPLETIONS, GOOD, headers=AUTH)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert body["error"]["type"] == "rate_limit_error"
    assert guarded.metrics()["adaptive_sarathi:request_rejected_total{reason=queue_full}"] == 1
    for conn, _ in (running, waiting):
        conn.close()
    assert guarded.wait_until(lambda: guarded.request("POST", COMPLETIONS, GOOD, headers=AUTH)[0] == 200)


def test_max_tokens_past_the_window_names_both_numbers(server):
    status, _, body = server.request("POST", COMPLETIONS, good(prompt=[7] * 2000, max_tokens=100))
    assert status == 400
    message = body["error"]["message"]
    assert "100" in message and "2000" in message and "2048" in message, message


def test_refusals_are_counted_by_reason(server):
    before = server.metrics().get("adaptive_sarathi:request_rejected_total{reason=bad_request}", 0)
    assert server.request("POST", COMPLETIONS, good(top_k="banana"))[0] == 400
    after = server.metrics()["adaptive_sarathi:request_rejected_total{reason=bad_request}"]
    assert after == before + 1


def test_the_waiting_queue_is_bounded_by_default():
    from adaptive_sarathi.server import ServerArgs

    assert ServerArgs().max_waiting == 256


def test_a_policy_that_expects_a_missed_ttft_refuses_with_429():
    """SLO admission: the budget policy says a request can no longer get its first token in time
    (BudgetPolicy.admits); the server answers 429 with its own code, counted apart, and serves
    the requests the policy admits."""
    from conftest import RunningServer

    from adaptive_sarathi.engine.budget import FixedBudget
    from adaptive_sarathi.engine.factory import create_engine
    from adaptive_sarathi.server.server import Server, ServerArgs

    class ShortPromptsOnly(FixedBudget):
        def admits(self, state, num_prompt_tokens, slo_class=None):
            return num_prompt_tokens <= 8

    engine = create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=512), ShortPromptsOnly(64))
    running = RunningServer(Server(engine, ServerArgs(port=0), "dummy:tiny"))
    try:
        status, headers, body = running.request("POST", COMPLETIONS, good(prompt=[5] * 20))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert body["error"]["code"] == "ttft_unreachable" and "TTFT" in body["error"]["message"]
        assert running.request("POST", COMPLETIONS, GOOD)[0] == 200
        samples = running.metrics()
        assert samples["adaptive_sarathi:request_rejected_total{reason=ttft_unreachable}"] == 1
        assert samples["adaptive_sarathi:request_rejected_total{reason=queue_full}"] == 0
    finally:
        running.stop()
