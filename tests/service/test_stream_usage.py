"""stream_options through the openai client on the tiny model: vLLM's continuous_usage_stats puts
each choice's running token counts on every chunk (what guidellm and aiperf read), the last chunk
still carries the totals, and unknown stream_options keys are a 400 naming them."""

import pytest

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(serve):
    with serve() as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


CONTINUOUS = {"include_usage": True, "continuous_usage_stats": True}


def test_completions_chunks_carry_running_counts_per_choice(client):
    chunks = list(client.completions.create(model="dummy:tiny", prompt=[[5, 6, 7], [8, 9]], n=2, max_tokens=4,
                                            stream=True, stream_options=CONTINUOUS, seed=1, temperature=0.9,
                                            extra_body={"ignore_eos": True}))
    seen: dict[int, list[int]] = {}
    for chunk in (c for c in chunks if c.choices):
        (choice,) = chunk.choices
        prompt_len = 3 if choice.index < 2 else 2  # choices 0, 1 sample prompt 0; 2, 3 prompt 1
        assert chunk.usage.prompt_tokens == prompt_len
        assert chunk.usage.total_tokens == prompt_len + chunk.usage.completion_tokens
        seen.setdefault(choice.index, []).append(chunk.usage.completion_tokens)
    assert seen == {i: [1, 2, 3, 4] for i in range(4)}
    totals = chunks[-1]
    assert not totals.choices
    assert (totals.usage.prompt_tokens, totals.usage.completion_tokens) == (5, 16)


@pytest.mark.embedded_model
def test_chat_chunks_carry_running_counts(serve):
    from adaptive_sarathi.engine.factory import EngineArgs

    with serve(EngineArgs(num_kv_blocks=64)) as smollm:
        client = openai.OpenAI(base_url=smollm.url + "/v1", api_key="unused", max_retries=0)
        chunks = list(client.chat.completions.create(
            model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
            temperature=0, stream=True, stream_options=CONTINUOUS, extra_body={"ignore_eos": True}))
    token_chunks = [c for c in chunks if c.choices]
    assert [c.usage.completion_tokens for c in token_chunks] == [1, 2, 3]
    assert len({c.usage.prompt_tokens for c in token_chunks}) == 1
    assert chunks[-1].usage.completion_tokens == 3 and not chunks[-1].choices


def test_continuous_usage_without_include_usage_adds_nothing(client):
    # As in vLLM: the running counts come only with include_usage.
    chunks = list(client.completions.create(model="dummy:tiny", prompt=[5, 6], max_tokens=3, stream=True,
                                            stream_options={"continuous_usage_stats": True},
                                            extra_body={"ignore_eos": True}))
    assert len(chunks) == 3 and all(c.usage is None for c in chunks)


@pytest.mark.parametrize("options, named", [
    ({"include_usage": True, "continuous_usage": True}, "'continuous_usage'"),
    ({"include_usage": True, "x": 1, "y": 2}, "'x', 'y'"),
])
def test_unknown_stream_options_are_refused_by_name(server, options, named):
    status, _, body = server.request("POST", "/v1/completions", {"prompt": [1, 2], "max_tokens": 2, "stream": True,
                                                                 "stream_options": options})
    assert status == 400
    assert body["error"]["param"] == "stream_options"
    assert named in body["error"]["message"]


def test_continuous_usage_stats_must_be_boolean(server):
    status, _, body = server.request("POST", "/v1/completions", {
        "prompt": [1, 2], "max_tokens": 2, "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": "yes"}})
    assert status == 400
    assert "continuous_usage_stats" in body["error"]["message"]
