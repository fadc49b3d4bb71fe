"""--served-model-name (every name listed and accepted, the first one naming the responses),
GET /v1/models/{id}, GET /version and the X-Request-Id echo."""

import pytest

from adaptive_sarathi.engine.factory import EngineArgs

COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def named(serve):
    with serve(EngineArgs(model="dummy:tiny", num_kv_blocks=256), served_model_names=("org/chat-model", "chat")) as s:
        yield s


def test_models_lists_every_served_name(named):
    status, _, body = named.request("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in body["data"]] == ["org/chat-model", "chat"]


@pytest.mark.parametrize("name", ["org/chat-model", "chat"])
def test_requests_may_use_any_name_and_responses_carry_the_first(named, name):
    status, _, body = named.request("POST", COMPLETIONS, {"model": name, "prompt": [1, 2, 3], "max_tokens": 2})
    assert status == 200 and body["model"] == "org/chat-model"


def test_an_unserved_name_is_404_listing_the_served_ones(named):
    status, _, body = named.request("POST", COMPLETIONS, {"model": "dummy:tiny", "prompt": [1], "max_tokens": 1})
    assert status == 404 and body["error"]["param"] == "model"
    assert "'org/chat-model', 'chat'" in body["error"]["message"]


@pytest.mark.parametrize("name", ["org/chat-model", "chat"])
def test_one_model_by_its_id(named, name):
    status, _, body = named.request("GET", f"/v1/models/{name}")
    assert status == 200 and body["id"] == name and body["object"] == "model"


def test_an_unknown_model_id_is_404(named):
    status, _, body = named.request("GET", "/v1/models/other")
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_version_answers_the_installed_version(named):
    from adaptive_sarathi.version import package_version

    status, _, body = named.request("GET", "/version")
    assert status == 200 and body == {"version": package_version()}


@pytest.mark.parametrize("stream", [False, True])
def test_x_request_id_is_echoed(named, stream):
    body = {"prompt": [1, 2], "max_tokens": 2, "stream": stream}
    status, headers, _ = named.request("POST", COMPLETIONS, body, headers={"X-Request-Id": "trace-42"})
    assert status == 200 and headers["X-Request-Id"] == "trace-42"
    assert named.request("POST", COMPLETIONS, {"prompt": [1], "max_tokens": 1, "bogus": 1},
                         headers={"X-Request-Id": "trace-43"})[1]["X-Request-Id"] == "trace-43"  # errors too
