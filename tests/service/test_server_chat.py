"""The official openai client against the server on the embedded SmolLM2: chat through the chat
template and text completions, streamed and not, with usage counts and stop strings."""

import pytest

openai = pytest.importorskip("openai")

from adaptive_sarathi.engine.factory import EngineArgs

pytestmark = pytest.mark.embedded_model

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(serve):
    with serve(EngineArgs(num_kv_blocks=64)) as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def collect_stream(stream):
    text, finish, usage = "", None, None
    for chunk in stream:
        for choice in chunk.choices:
            text += (choice.delta.content or "") if hasattr(choice, "delta") else choice.text
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    return text, finish, usage


def test_chat_streamed_equals_chat_collected(server, client):
    full = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=MESSAGES, max_tokens=6,
                                          temperature=0)
    tokenizer = server.engine.tokenizer
    prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True))
    assert full.object == "chat.completion"
    assert full.choices[0].message.role == "assistant"
    assert full.choices[0].finish_reason == "length"
    assert full.usage.prompt_tokens == len(prompt_ids)
    assert full.usage.completion_tokens == 6
    assert "Paris" in full.choices[0].message.content

    stream = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=MESSAGES,
                                            max_completion_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage = collect_stream(stream)
    assert (text, finish) == (full.choices[0].message.content, "length")
    # The same prompt again: its full blocks (of 16 tokens) come from the prefix cache this time.
    streamed, collected = usage.model_dump(), full.usage.model_dump()
    assert streamed.pop("prompt_tokens_details")["cached_tokens"] == (len(prompt_ids) - 1) // 16 * 16
    collected.pop("prompt_tokens_details")
    assert streamed == collected


def test_text_completion_streamed_and_not(client):
    full = client.completions.create(model="SmolLM2-135M-Instruct", prompt="The capital of France is",
                                     max_tokens=4, temperature=0)
    stream = client.completions.create(model="SmolLM2-135M-Instruct", prompt="The capital of France is",
                                       max_tokens=4, temperature=0, stream=True)
    text, finish, usage = collect_stream(stream)
    assert text == full.choices[0].text and "Paris" in text
    assert finish == full.choices[0].finish_reason == "length"
    assert usage is None  # not asked for
    assert full.usage.completion_tokens == 4


def test_stop_string_ends_the_text_before_it(client):
    prompt = "The capital of France is"
    plain = client.completions.create(model="SmolLM2-135M-Instruct", prompt=prompt, max_tokens=4,
                                      temperature=0).choices[0].text
    stop = plain.strip().split()[0][1:3]  # two characters inside "Paris"
    out = client.completions.create(model="SmolLM2-135M-Instruct", prompt=prompt, max_tokens=4, temperature=0,
                                    stop=[stop, "never"])
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == plain[:plain.index(stop)]
