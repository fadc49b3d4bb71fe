"""On a GPU: the sampler's options (logprobs, penalties, min_tokens, min_p, top_k, seeds) give the
same tokens and logprobs whether decode steps replay CUDA graphs or run eagerly, on the embedded
SmolLM2 in bfloat16.

The two paths compute the same logits up to rounding (their split-K partitions differ, see
test_cuda_graph.py), so a draw near a tie may go either way; the bar is the one
test_engine_with_graphs_generates_like_eager sets for plain greedy decoding (7 of 8 prompts
identical), per option set, and logprobs within bfloat16 rounding where the tokens agree. An
option the graph path dropped or misapplied (a missing penalty history, min_tokens not masking
EOS, a seed not reaching the draw) changes most prompts, not one.
"""

import pytest

from adaptive_sarathi.engine.sampling_params import SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.embedded_model]

PROMPTS = ["The capital of France is", "def quicksort(xs):", "Water boils at", "In 1969, the first humans",
           "The three primary colors are", "A haiku about autumn:\n", "import numpy as np\n",
           "The largest planet in the solar system is"]
NEW_TOKENS = 24
CASES = {
    "greedy logprobs 5": dict(logprobs=5),
    "penalties": dict(presence_penalty=0.8, frequency_penalty=0.5, repetition_penalty=1.3, logprobs=2),
    "min_tokens": dict(min_tokens=NEW_TOKENS, ignore_eos=False),
    "seeded temperature 0.8, min_p": dict(temperature=0.8, seed=11, min_p=0.05, logprobs=3),
    "seeded temperature 1, top_k 20, penalties": dict(temperature=1.0, seed=5, top_k=20, frequency_penalty=1.0),
}
LOGPROB_TOLERANCE = 0.1  # bfloat16 logits of |x| ~ 10-30 round by ~0.06-0.125 per ulp


@pytest.fixture(scope="module")
def engines():
    from adaptive_sarathi.engine.factory import EngineArgs, create_engine

    # A small cache each, so both engines fit the card at once.
    graphed = create_engine(EngineArgs(device="cuda", dtype="bfloat16", num_kv_blocks=512))
    eager = create_engine(EngineArgs(device="cuda", dtype="bfloat16", num_kv_blocks=512, enforce_eager=True))
    assert graphed.executor.runner.graphs is not None, "the graphed engine was meant to capture decode graphs"
    assert eager.executor.runner.graphs is None
    return graphed, eager


def generate(engine, params: SamplingParams) -> list[tuple[list[int], list]]:
    """Per prompt: its token ids and the logprobs of each (TokenLogprobs, or None when not asked)."""
    tok = engine.tokenizer
    ids = [engine.add_request(tok.encode(p), params) for p in PROMPTS]
    tokens = {i: [] for i in ids}
    logprobs = {i: [] for i in ids}
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens[out.request_id] += out.new_token_ids
            logprobs[out.request_id] += out.new_logprobs or [None] * len(out.new_token_ids)
    return [(tokens[i], logprobs[i]) for i in ids]


@pytest.mark.parametrize("case", list(CASES))
def test_options_agree_with_graphs_on_and_off(engines, case):
    options = {"max_tokens": NEW_TOKENS, "ignore_eos": True, **CASES[case]}
    params = SamplingParams(**options)
    graphed, eager = (generate(engine, params) for engine in engines)
    same = [g[0] == e[0] for g, e in zip(graphed, eager)]
    assert sum(same) >= 7, f"{case}: only {sum(same)} of 8 prompts agree between graph replay and eager decode"
    eos = set(engines[0].eos_token_ids)
    for (tokens, lps), (_, eager_lps), agree in zip(graphed, eager, same):
        if params.min_tokens:
            assert len(tokens) == NEW_TOKENS and not eos & set(tokens[:-1]), f"{case}: EOS before min_tokens"
        if params.logprobs is None or not agree:
            continue
        for g, e in zip(lps, eager_lps):
            assert g.token_id == e.token_id
            assert abs(g.logprob - e.logprob) <= LOGPROB_TOLERANCE, f"{case}: chosen logprob {g.logprob} vs {e.logprob}"
            assert len(g.top) == len(e.top) == params.logprobs
            for (_, g_lp), (_, e_lp) in zip(g.top, e.top):
                assert abs(g_lp - e_lp) <= LOGPROB_TOLERANCE, f"{case}: top logprob {g_lp} vs {e_lp}"
