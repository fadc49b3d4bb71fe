"""GET and PUT /v1/slo_policy: the SLO policy in force, replaced at run time on the engine thread
(new requests get the new classes and targets, requests in flight finish), behind the API key."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, RunningServer, record_added

from adaptive_sarathi.controller.adaptive import AdaptiveBudget
from adaptive_sarathi.controller.slo import load_slo_policy, policy_from_dict
from adaptive_sarathi.engine.factory import create_engine
from adaptive_sarathi.server.server import Server, ServerArgs

COMPLETIONS, SLO_POLICY = "/v1/completions", "/v1/slo_policy"
INFO = "adaptive_sarathi:slo_policy_info"
TIERED = load_slo_policy("llama-3-8b-h100-tiered")  # interactive (the default) and batch
KEY = "sekrit"
AUTH = {"Authorization": f"Bearer {KEY}"}
NEW = {"name": "three-tier", "slo": {"ttft": {"target_ms": 3000}, "tbt": {"target_ms": 100}},
       "classes": {"realtime": {"ttft": {"target_ms": 400}, "tbt": {"target_ms": 50}},
                   "bulk": {"ttft": {"target_ms": 60000}}},
       "default_class": "bulk"}


def body(**extra):
    return {"prompt": [3, 4, 5], "max_tokens": 2, "ignore_eos": True, **extra}


@pytest.fixture
def adaptive():
    """A server whose budget policy is adaptive under TIERED, with an API key."""
    engine = create_engine(TINY, AdaptiveBudget(TIERED))
    running = RunningServer(Server(engine, ServerArgs(port=0, slo=TIERED, api_key=KEY), "dummy:tiny"))
    try:
        yield running
    finally:
        running.stop()


def test_get_answers_the_policy_in_force(adaptive):
    status, _, doc = adaptive.request("GET", SLO_POLICY, headers=AUTH)
    assert status == 200 and policy_from_dict(doc) == TIERED
    assert adaptive.metrics()[f"{INFO}{{name=llama-3-8b-h100-tiered}}"] == 1


def test_put_puts_the_new_policy_in_force(adaptive):
    assert adaptive.request("POST", COMPLETIONS, body(slo_class="realtime"), AUTH)[0] == 400  # not yet a class
    status, _, doc = adaptive.request("PUT", SLO_POLICY, NEW, AUTH)
    assert status == 200, doc
    new = policy_from_dict(NEW)
    assert policy_from_dict(doc) == new
    assert adaptive.request("GET", SLO_POLICY, headers=AUTH)[2] == doc
    assert adaptive.server.args.slo == new and adaptive.engine.policy.slo == new
    assert adaptive.engine.policy.slo_targets() == new.as_targets()

    status, _, answer = adaptive.request("POST", COMPLETIONS, body(slo_class="realtime"), AUTH)
    assert status == 200, answer
    status, _, answer = adaptive.request("POST", COMPLETIONS, body(slo_class="batch"), AUTH)  # an old class
    assert status == 400 and answer["error"]["param"] == "slo_class" and "realtime" in answer["error"]["message"]
    samples = adaptive.metrics()
    assert samples[f"{INFO}{{name=three-tier}}"] == 1
    assert f"{INFO}{{name=llama-3-8b-h100-tiered}}" not in samples  # the old name's series is gone
    ttft = "adaptive_sarathi:time_to_first_token_seconds_count"
    assert samples[f"{ttft}{{slo_class=realtime}}"] == 1  # the new class has its own series


def test_put_accepts_yaml_text(adaptive):
    text = "name: yaml-one\nslo:\n  ttft: {target_ms: 1500}\n  tbt: {target_ms: 90, percentile: 95}\n"
    status, _, doc = adaptive.request("PUT", SLO_POLICY, text.encode(),
                                      {**AUTH, "Content-Type": "application/yaml"})
    assert status == 200, doc
    assert doc["name"] == "yaml-one" and doc["slo"]["tbt"] == {"target_ms": 90.0, "percentile": 95.0}


@pytest.mark.parametrize("document,field", [
    ({**NEW, "slo": {"ttft": {"target_ms": 3000}, "tbt": {"target_ms": -5}}}, "slo.tbt.target_ms"),
    ({**NEW, "default_class": "nobody"}, "default_class"),
    ({**NEW, "budget": {"min_token_budget": 4096, "max_token_budget": 1024}}, "budget.min_token_budget"),
    ({key: value for key, value in NEW.items() if key != "slo"}, "slo"),
    ([1, 2], "(top level)"),
])
def test_an_invalid_policy_is_a_400_naming_the_field_and_changes_nothing(adaptive, document, field):
    status, _, answer = adaptive.request("PUT", SLO_POLICY, document, AUTH)
    assert status == 400 and answer["error"]["param"] == field, answer
    assert field in answer["error"]["message"] and answer["error"]["code"] == "invalid_slo_policy"
    assert adaptive.request("GET", SLO_POLICY, headers=AUTH)[2]["name"] == TIERED.name
    assert adaptive.engine.policy.slo == TIERED


def test_bad_json_is_a_400(adaptive):
    status, _, answer = adaptive.request("PUT", SLO_POLICY, b"{not json", AUTH)
    assert status == 400 and "not valid JSON" in answer["error"]["message"]


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_the_api_key_guards_the_route(adaptive, method):
    status, _, answer = adaptive.request(method, SLO_POLICY, NEW if method == "PUT" else None)
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    assert adaptive.engine.policy.slo == TIERED


def test_a_server_whose_policy_serves_no_slo_refuses_with_409(serve):
    with serve(slo=TIERED) as fixed:  # classes, but a fixed budget without edf: no SLO to replace
        status, _, answer = fixed.request("PUT", SLO_POLICY, NEW)
        assert status == 409 and "--policy adaptive" in answer["error"]["message"], answer
        assert fixed.request("GET", SLO_POLICY)[2]["name"] == TIERED.name
        assert fixed.metrics()[f"{INFO}{{name=llama-3-8b-h100-tiered}}"] == 1


def test_get_without_a_policy_is_a_404(serve):
    with serve() as plain:
        status, _, answer = plain.request("GET", SLO_POLICY)
        assert status == 404 and answer["error"]["code"] == "no_slo_policy"
        assert not any(key.startswith(INFO) for key in plain.metrics())


def test_a_stream_in_flight_during_a_put_completes_with_its_own_deadlines(adaptive):
    added = record_added(adaptive)
    conn, response = adaptive.open_stream(body(max_tokens=1500, stream_options={"include_usage": True}),
                                          headers=AUTH)
    assert response.status == 200
    assert adaptive.request("PUT", SLO_POLICY, NEW, AUTH)[0] == 200
    assert adaptive.metrics()["adaptive_sarathi:num_requests_running"] == 1  # still running after the PUT
    assert adaptive.request("POST", COMPLETIONS, body(), AUTH)[0] == 200  # served meanwhile: the new default
    events = [line[len(b"data: "):] for line in response.read().split(b"\n\n") if line.startswith(b"data: ")]
    conn.close()
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 1500  # every token, none lost to the PUT
    old, new = added
    # The stream kept what it was stamped with (the old default class, interactive); the request
    # after the PUT got the new default class, bulk.
    assert (old.slo_class, old.tbt_target_s) == ("interactive", pytest.approx(0.065))
    assert old.ttft_deadline_s == pytest.approx(old.arrival_time + 1.0)
    assert (new.slo_class, new.tbt_target_s) == ("bulk", pytest.approx(0.100))
    assert new.ttft_deadline_s == pytest.approx(new.arrival_time + 60.0)


def test_a_policy_the_budget_policy_refuses_is_a_400_naming_budget():
    from adaptive_sarathi.controller.registry import make_policy

    engine = create_engine(TINY, make_policy("two_level:512:2048", TIERED))
    running = RunningServer(Server(engine, ServerArgs(port=0, slo=TIERED), "dummy:tiny"))
    try:
        narrow = {**NEW, "budget": {"max_token_budget": 1024, "fallback_token_budget": 512}}
        status, _, answer = running.request("PUT", SLO_POLICY, narrow)
        assert status == 400 and answer["error"]["param"] == "budget", answer
        assert "high=2048" in answer["error"]["message"]
        assert running.request("GET", SLO_POLICY)[2]["name"] == TIERED.name
        assert running.request("PUT", SLO_POLICY, NEW)[0] == 200  # one inside its levels' bounds is taken
        assert running.engine.policy.slo == policy_from_dict(NEW)
    finally:
        running.stop()
