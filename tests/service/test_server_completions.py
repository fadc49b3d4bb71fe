"""The official openai client against the server on the tiny model: token-id completions,
streamed and not, usage numbers, several prompts, 32 concurrent streams."""

import asyncio

import pytest

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(serve):
    with serve() as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["dummy:tiny"]
    assert server.request("GET", "/health")[0] == 200


def test_completion_reports_usage(client):
    out = client.completions.create(model="dummy:tiny", prompt=[5, 6, 7, 8], max_tokens=7, temperature=0,
                                    extra_body={"ignore_eos": True})
    assert out.object == "text_completion"
    assert out.choices[0].finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (4, 7, 11)


def test_stream_has_one_chunk_per_token_and_usage_last(client):
    chunks = list(client.completions.create(model="dummy:tiny", prompt=[5, 6, 7], max_tokens=5, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    token_chunks = [c for c in chunks if c.choices]
    assert len(token_chunks) == 5
    assert [c.choices[0].finish_reason for c in token_chunks] == [None] * 4 + ["length"]
    assert all(c.usage is None for c in token_chunks)
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 3


def test_several_prompts_give_one_choice_each(client):
    out = client.completions.create(model="dummy:tiny", prompt=[[1, 2], [3, 4, 5]], max_tokens=3, seed=7,
                                    temperature=0.8, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in out.choices) == [0, 1]
    assert out.usage.prompt_tokens == 5 and out.usage.completion_tokens == 6


def test_seeded_sampling_is_reproducible(server):
    body = {"prompt": [9, 8, 7], "max_tokens": 6, "temperature": 1.0, "seed": 3, "ignore_eos": True}
    first = server.request("POST", "/v1/completions", body)[2]
    second = server.request("POST", "/v1/completions", body)[2]
    assert first["usage"] == second["usage"]


def test_32_concurrent_streams_complete_with_their_token_counts(server):
    lengths = [4 + i % 9 for i in range(32)]

    async def one(client, i, max_tokens):
        stream = await client.completions.create(
            model="dummy:tiny", prompt=list(range(10, 20 + i)), max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        tokens, usage, finish = 0, None, None
        async for chunk in stream:
            if chunk.choices:
                tokens += 1
                finish = chunk.choices[0].finish_reason or finish
            usage = chunk.usage or usage
        return tokens, usage.completion_tokens, finish

    async def main():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
            return await asyncio.gather(*(one(client, i, n) for i, n in enumerate(lengths)))

    results = asyncio.run(main())
    assert [r[0] for r in results] == lengths
    assert [r[1] for r in results] == lengths
    assert all(r[2] == "length" for r in results)
    bm = server.engine.scheduler.block_manager
    assert bm.num_free_blocks == bm.num_total_blocks
