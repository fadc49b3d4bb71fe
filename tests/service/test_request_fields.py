"""The request fields beyond the basics, through the official openai client against the embedded
SmolLM2: n samples per prompt, logprobs (chat and completions, streamed and not), the penalties
and min_tokens."""

import json
import math

import pytest

from adaptive_sarathi.engine.factory import EngineArgs

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.embedded_model

USER = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(serve):
    with serve(EngineArgs(num_kv_blocks=128)) as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def chat(client, **fields):
    return client.chat.completions.create(model=client.models.list().data[0].id, messages=USER, **fields)


def test_n_samples_are_the_seeded_single_requests(client):
    reply = chat(client, n=3, seed=11, temperature=1.0, max_tokens=12)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    singles = [chat(client, seed=11 + i, temperature=1.0, max_tokens=12).choices[0].message.content
               for i in range(3)]
    assert [c.message.content for c in reply.choices] == singles
    assert len(set(singles)) > 1  # different seeds, different samples
    one = chat(client, seed=11, temperature=1.0, max_tokens=12)
    assert reply.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once


def test_n_streamed_joins_to_the_collected_choices(client):
    fields = dict(n=2, seed=3, temperature=0.9, max_tokens=10)
    collected = chat(client, **fields)
    texts, roles = {}, {}
    for chunk in chat(client, stream=True, **fields):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            roles.setdefault(choice.index, choice.delta.role)
    assert texts == {c.index: c.message.content for c in collected.choices}
    assert roles == {0: "assistant", 1: "assistant"}


def test_completions_choice_index_is_prompt_times_n_plus_sample(client):
    model = client.models.list().data[0].id
    prompts = ["The sky is", "Water is"]
    reply = client.completions.create(model=model, prompt=prompts, n=2, max_tokens=5, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    for j, prompt in enumerate(prompts):
        alone = client.completions.create(model=model, prompt=prompt, max_tokens=5, temperature=0).choices[0].text
        assert reply.choices[2 * j].text == reply.choices[2 * j + 1].text == alone  # greedy: equal samples


def test_chat_logprobs_greedy_choice_is_the_top_alternative(client):
    reply = chat(client, logprobs=True, top_logprobs=4, max_tokens=8, temperature=0)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 4
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs),
                                                                 reverse=True)
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1 + 1e-5
        assert entry.bytes == list(entry.token.encode())
    assert chat(client, max_tokens=2).choices[0].logprobs is None  # not asked: none


def test_chat_logprobs_streamed_equal_collected(client):
    fields = dict(logprobs=True, top_logprobs=2, max_tokens=8, temperature=0)
    collected = chat(client, **fields).choices[0].logprobs.content
    streamed = [e for chunk in chat(client, stream=True, **fields) for c in chunk.choices
                for e in (c.logprobs.content if c.logprobs else [])]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in collected]


def test_completions_logprobs_shape(client):
    model = client.models.list().data[0].id
    reply = client.completions.create(model=model, prompt="One, two,", max_tokens=6, temperature=0, logprobs=3)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert "".join(lp.tokens) == reply.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert top[token] == logprob and max(top.values()) == logprob  # greedy: the chosen is the top
        assert 1 <= len(top) <= 4


def test_min_tokens_holds_off_the_end(client):
    short = chat(client, max_tokens=200, temperature=0)
    assert short.choices[0].finish_reason == "stop"
    n = short.usage.completion_tokens
    longer = chat(client, max_tokens=200, temperature=0, extra_body={"min_tokens": n + 5})
    assert longer.usage.completion_tokens >= n + 5
    assert longer.choices[0].message.content.startswith(short.choices[0].message.content)


def test_penalties_change_a_repetitive_greedy_output(client):
    model = client.models.list().data[0].id
    prompt = "apple apple apple apple apple apple apple"

    def tokens(**fields):
        reply = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0, logprobs=0,
                                          **fields)
        return reply.choices[0].logprobs.tokens

    plain = tokens()
    most = max(plain.count(t) for t in plain)
    assert most >= 6  # the model repeats itself
    for fields in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
                   {"extra_body": {"repetition_penalty": 2.0}}):
        penalized = tokens(**fields)
        assert max(penalized.count(t) for t in penalized) < most, fields


def test_json_mode_answers_parse_as_objects(client):
    """JSON mode: every answer that ends by itself (finish_reason stop) is one JSON object, at
    temperature 1 too, where the model alone often writes prose around it."""
    messages = [{"role": "user", "content": "Describe a cat as JSON with keys name and age."}]
    model = client.models.list().data[0].id
    ended = 0
    for seed in range(4):
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=120, temperature=1.0,
                                               seed=seed, response_format={"type": "json_object"})
        choice = reply.choices[0]
        if choice.finish_reason == "stop":
            ended += 1
            assert isinstance(json.loads(choice.message.content), dict), choice.message.content
    assert ended >= 2
    completion = client.completions.create(model=model, prompt="A JSON object describing a dog:", max_tokens=60,
                                           temperature=0, extra_body={"response_format": {"type": "json_object"}})
    text = completion.choices[0].text
    assert text.lstrip().startswith("{")
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
