"""A request's SLO class through the HTTP API: the body field `slo_class` or the x-slo-class
header (the body wins), checked against the server's SLO policy, carried into the engine's
Request and into the slo_class label of the per-request latency histograms."""

import pytest
from conftest import record_added

from adaptive_sarathi.controller.slo import LatencyTarget, RequestClass, SLOPolicy, load_slo_policy
from adaptive_sarathi.engine.factory import EngineArgs

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
M = "adaptive_sarathi:"
TIERED = load_slo_policy("llama-3-8b-h100-tiered")  # interactive (the default) and batch


def body(**extra):
    return {"prompt": [3, 4, 5], "max_tokens": 2, "ignore_eos": True, **extra}


@pytest.fixture(scope="module")
def tiered(serve):
    with serve(slo=TIERED) as server:
        yield server, record_added(server)


@pytest.mark.parametrize("extra,headers,expected", [
    ({"slo_class": "batch"}, {}, "batch"),
    ({}, {"x-slo-class": "batch"}, "batch"),
    ({"slo_class": "batch"}, {"X-SLO-Class": "interactive"}, "batch"),  # the body wins
    ({}, {}, "interactive"),  # the policy's default_class
    ({}, {"x-slo-class": "  "}, "interactive"),  # a blank header names nothing
])
def test_the_class_reaches_the_engine_request(tiered, extra, headers, expected):
    server, added = tiered
    before = len(added)
    status, _, answer = server.request("POST", COMPLETIONS, body(**extra), headers)
    assert status == 200, answer
    assert [r.slo_class for r in added[before:]] == [expected]


def test_every_prompt_of_a_list_gets_the_class(tiered):
    server, added = tiered
    before = len(added)
    status, _, answer = server.request("POST", COMPLETIONS, body(prompt=[[1, 2], [3, 4], [5]], slo_class="batch"))
    assert status == 200 and len(answer["choices"]) == 3
    assert [r.slo_class for r in added[before:]] == ["batch"] * 3


@pytest.mark.parametrize("extra,headers,param", [
    ({"slo_class": "premium"}, {}, "slo_class"),
    ({}, {"x-slo-class": "premium"}, "x-slo-class"),
    ({"slo_class": "premium"}, {"x-slo-class": "batch"}, "slo_class"),
])
def test_an_unknown_class_is_a_400_naming_the_field_and_the_known_classes(tiered, extra, headers, param):
    server, added = tiered
    before = len(added)
    status, _, answer = server.request("POST", COMPLETIONS, body(**extra), headers)
    error = answer["error"]
    assert status == 400 and error["param"] == param and error["code"] == "unknown_slo_class"
    assert "'premium'" in error["message"] and "interactive, batch" in error["message"]
    assert len(added) == before  # refused before the engine


@pytest.mark.parametrize("value", [3, "", ["batch"]])
def test_a_class_that_is_not_a_name_is_a_400(tiered, value):
    server, _ = tiered
    status, _, answer = server.request("POST", COMPLETIONS, body(slo_class=value))
    assert status == 400 and answer["error"]["param"] == "slo_class"


def test_priority_zero_is_accepted_and_any_other_is_a_400_that_says_it_is_not_implemented(tiered):
    server, _ = tiered
    assert server.request("POST", COMPLETIONS, body(priority=0))[0] == 200
    status, _, answer = server.request("POST", COMPLETIONS, body(priority=-1))
    assert status == 400 and answer["error"]["param"] == "priority"
    assert "not implemented" in answer["error"]["message"] and "slo_class" in answer["error"]["message"]


def test_the_latency_histograms_are_labelled_by_class(serve):
    with serve(slo=TIERED) as server:
        for extra, headers in [({"slo_class": "batch"}, {}), ({}, {"x-slo-class": "batch"}), ({}, {})]:
            assert server.request("POST", COMPLETIONS, body(max_tokens=3, **extra), headers)[0] == 200
        samples = server.metrics()
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds"):
        assert samples[f"{M}{name}_count{{slo_class=batch}}"] == 2, name
        assert samples[f"{M}{name}_count{{slo_class=interactive}}"] == 1, name
        assert samples[f"{M}{name}_count"] == 0, name  # the "" series: requests without a class
    assert samples[f"{M}inter_token_latency_seconds_count{{slo_class=batch}}"] == 2 * 2
    assert samples[f"{M}inter_token_latency_seconds_count{{slo_class=interactive}}"] == 2
    # Only the policy's classes and "" ever appear as label values.
    values = {key.split("slo_class=")[1].split(",")[0].rstrip("}") for key in samples if "slo_class=" in key}
    assert values == {"batch", "interactive"}


def test_without_a_default_class_a_request_that_names_none_has_no_class(serve):
    policy = SLOPolicy("two-classes", LatencyTarget(2000), LatencyTarget(100),
                       classes=(RequestClass("gold", LatencyTarget(500), LatencyTarget(50)),))
    with serve(slo=policy) as server:
        added = record_added(server)
        assert server.request("POST", COMPLETIONS, body())[0] == 200
        assert server.request("POST", COMPLETIONS, body(), {"x-slo-class": "gold"})[0] == 200
        samples = server.metrics()
    assert [r.slo_class for r in added] == [None, "gold"]
    assert samples[f"{M}time_to_first_token_seconds_count"] == 1
    assert samples[f"{M}time_to_first_token_seconds_count{{slo_class=gold}}"] == 1


@pytest.mark.parametrize("path,extra,headers,param", [
    (COMPLETIONS, {"slo_class": "batch"}, {}, "slo_class"),
    (COMPLETIONS, {}, {"x-slo-class": "batch"}, "x-slo-class"),
])
def test_a_server_without_an_slo_policy_refuses_a_class_and_says_how_to_get_one(serve, path, extra, headers, param):
    with serve() as server:
        status, _, answer = server.request("POST", path, body(**extra), headers)
        assert server.request("POST", path, body())[0] == 200  # no class, no policy: served
    assert status == 400 and answer["error"]["param"] == param
    assert "--slo-policy" in answer["error"]["message"]


@pytest.mark.embedded_model
def test_chat_completions_take_the_class_from_the_body_and_the_header(serve):
    messages = [{"role": "user", "content": "hi"}]
    with serve(EngineArgs(num_kv_blocks=64), slo=TIERED) as server:
        added = record_added(server)
        chat = {"messages": messages, "max_tokens": 1}
        assert server.request("POST", CHAT, {**chat, "slo_class": "batch"})[0] == 200
        assert server.request("POST", CHAT, chat, {"x-slo-class": "batch"})[0] == 200
        status, _, answer = server.request("POST", CHAT, chat, {"x-slo-class": "premium"})
    assert [r.slo_class for r in added] == ["batch", "batch"]
    assert status == 400 and "interactive, batch" in answer["error"]["message"]


def test_a_class_outside_the_policy_never_becomes_a_label_value():
    from prometheus_client.parser import text_string_to_metric_families

    from adaptive_sarathi.engine.outputs import RequestOutput
    from adaptive_sarathi.engine.request import FinishReason, RequestTimeline
    from adaptive_sarathi.metrics import ServerMetrics

    metrics = ServerMetrics("m", slo_classes=("gold",))
    for slo_class in ("gold", "rogue", None):
        timeline = RequestTimeline(0.0, 0.1, 0.2, [0.2, 0.25], 0.25)
        metrics.observe_output(RequestOutput("r", [1], [7, 8], [7, 8], "", "", True, FinishReason.LENGTH,
                                             timeline, slo_class=slo_class))
    counts = {s.labels["slo_class"]: s.value
              for family in text_string_to_metric_families(metrics.render()[0].decode())
              for s in family.samples if s.name == f"{M}time_to_first_token_seconds_count"}
    assert counts == {"": 2, "gold": 1}
