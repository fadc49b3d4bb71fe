"""--served-model-name: every name is listed and accepted; the first one names the responses."""

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
