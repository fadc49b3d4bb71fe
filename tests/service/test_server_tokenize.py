"""/tokenize and /detokenize on the embedded SmolLM2: the server's own tokens, vLLM's shapes."""

import pytest

from adaptive_sarathi.engine.factory import EngineArgs

pytestmark = pytest.mark.embedded_model

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(serve):
    with serve(EngineArgs(num_kv_blocks=64)) as s:
        yield s


def test_tokenize_a_prompt_gives_the_tokens_a_completion_is_charged(server):
    status, _, body = server.request("POST", "/tokenize", {"prompt": "Hello there, world"})
    assert status == 200 and body["tokens"] == server.engine.tokenizer.encode("Hello there, world")
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == server.engine.max_model_len
    _, _, done = server.request("POST", "/v1/completions", {"prompt": "Hello there, world", "max_tokens": 1})
    assert done["usage"]["prompt_tokens"] == body["count"]


def test_tokenize_messages_counts_as_chat_does(server):
    status, _, body = server.request("POST", "/tokenize", {"messages": MESSAGES})
    _, _, chat = server.request("POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1})
    assert status == 200 and body["count"] == chat["usage"]["prompt_tokens"]
    _, _, bare = server.request("POST", "/tokenize", {"messages": MESSAGES, "add_generation_prompt": False})
    assert bare["count"] < body["count"]


def test_detokenize_inverts_tokenize(server):
    _, _, body = server.request("POST", "/tokenize", {"prompt": "Paris is lovely", "add_special_tokens": False})
    status, _, text = server.request("POST", "/detokenize", {"tokens": body["tokens"]})
    assert status == 200 and text == {"prompt": "Paris is lovely"}


@pytest.mark.parametrize("path, body, field", [
    ("/tokenize", {"prompt": "x", "messages": MESSAGES}, "prompt"),
    ("/tokenize", {"prompt": [1, 2]}, "prompt"),
    ("/tokenize", {"prompt": "x", "bogus": 1}, "bogus"),
    ("/tokenize", {"prompt": "x", "add_generation_prompt": True}, "add_generation_prompt"),
    ("/tokenize", {"prompt": "x", "model": "other"}, "model"),
    ("/detokenize", {"tokens": [1, -1]}, "tokens"),
    ("/detokenize", {"tokens": [10 ** 9]}, "tokens"),
    ("/detokenize", {"tokens": "12"}, "tokens"),
])
def test_bad_bodies_name_the_field(server, path, body, field):
    status, _, answer = server.request("POST", path, body)
    assert status in (400, 404) and answer["error"]["param"] == field
