"""Greedy output equals Hugging Face transformers token for token on the embedded SmolLM2
(same converted GGUF weights, float32, CPU), under every scheduler, several token budgets and
forced preemption: batching, chunk boundaries and recompute must not change a single token."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from adaptive_sarathi import LLM, SamplingParams  # noqa: E402
from adaptive_sarathi.engine.loaders import resolve_model  # noqa: E402

# Each test generates 8 prompts x 32 tokens on the 135M model in float32: tens of seconds apiece.
pytestmark = [pytest.mark.embedded_model, pytest.mark.slow]

NEW_TOKENS = 32
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "1, 2, 3, 5, 8, 13, 21,",
    "<|im_start|>user\nWhat is the boiling point of water at sea level?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a kingdom far away, there lived a dragon who " * 12,
    "Translate to French: 'The weather is lovely today.'",
    "Q: Why is the sky blue?\nA:",
    "Les Misérables est un roman de Victor Hugo publié en 1862. " * 6 + "Résumé:",
]


@pytest.fixture(scope="module")
def source():
    return resolve_model(None)


@pytest.fixture(scope="module")
def prompt_ids(source):
    from adaptive_sarathi.engine.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(source.tokenizer_path)
    ids = [tok.encode(p) for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(ids), "prompts should have distinct lengths"
    return ids


@pytest.fixture(scope="module")
def expected(source, prompt_ids):
    hf = transformers.AutoModelForCausalLM.from_pretrained(source.weights_path, dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for ids in prompt_ids:
            x = torch.tensor([ids])
            # eos_token_id=None: generate exactly NEW_TOKENS, like ignore_eos on our side.
            y = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS, do_sample=False,
                            eos_token_id=None, pad_token_id=0)
            outs.append(y[0, len(ids):].tolist())
    return outs


def generate(prompt_ids, **engine_args):
    llm = LLM(None, **engine_args)
    params = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)
    return llm.generate(prompt_ids, params)


def assert_same(outputs, expected):
    for i, (out, exp) in enumerate(zip(outputs, expected)):
        assert out.token_ids == exp, f"prompt {i} diverged at token {_first_diff(out.token_ids, exp)}"
        assert out.finish_reason_str == "length"


def _first_diff(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm", "orca", "request_level"])
def test_every_scheduler_matches_transformers(prompt_ids, expected, scheduler):
    assert_same(generate(prompt_ids, scheduler=scheduler, token_budget=512), expected)


@pytest.mark.parametrize("token_budget", [16, 64, 512])
def test_sarathi_budgets_match_transformers(prompt_ids, expected, token_budget):
    assert_same(generate(prompt_ids, scheduler="sarathi", token_budget=token_budget), expected)


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm"])
def test_forced_preemption_matches_transformers(prompt_ids, expected, scheduler):
    longest = max(len(i) for i in prompt_ids) + NEW_TOKENS
    blocks = -(-longest // 16) + 4  # room for the longest request alone, far too little for all at once
    outputs = generate(prompt_ids, scheduler=scheduler, token_budget=64, num_kv_blocks=blocks)
    assert sum(o.num_preemptions for o in outputs) > 0, "the cache was meant to force preemptions"
    assert_same(outputs, expected)
