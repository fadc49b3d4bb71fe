"""Tensor-parallel parity on GPUs (NCCL): dummy:llama-3-8b in bf16 at TP=2 (and TP=4 with 4 GPUs)
against TP=1 on the same random weights.

Why tolerances and a short horizon: in bf16 the row-parallel projections round each rank's partial
product to bf16 before the all-reduce sums them, so TP=N adds in a different order and rounds at
different points than TP=1. Logits then differ by a small relative amount (of the order of 1%),
and a greedy choice between two near-tied tokens may flip, after which the two continuations are
unrelated. So the test checks:
  1. logits (teacher-forced: TP=N reads TP=1's greedy continuation) within a relative L2 error of
     REL_TOL; a wrong shard (mis-sliced heads, a missing all-reduce) gives errors of order 1;
  2. at every teacher-forced position where TP=1's top-2 margin exceeds MARGIN (a clear choice),
     TP=N picks the same token; at least 6 positions must be clear, so the check cannot pass
     vacuously;
  3. the engine's free-running greedy tokens (plan broadcast, driver-side sampling) equal TP=1's
     up to the first position whose margin is below MARGIN, over HORIZON tokens.
Each rank needs ~8 GB (TP=2) of the 16 GB of weights; TP=1 runs first and frees its GPU.
"""

from __future__ import annotations

import gc
import random

import pytest
import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.llm import LLM

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs >= 2 CUDA devices")]

MODEL = "dummy:llama-3-8b"
HORIZON = 8
REL_TOL = 0.05
MARGIN = 0.25  # logits; bf16 TP differences are far smaller than this at the logit scale (~1.3 std)
BLOCK = 16
ENGINE = dict(device="cuda", dtype="bfloat16", max_model_len=512, num_kv_blocks=512, max_num_seqs=16)


def _prompts() -> list[list[int]]:
    rng = random.Random(0)
    return [[rng.randrange(128000) for _ in range(rng.randrange(16, 48))] for _ in range(4)]


def _teacher_forced_batch(prompt: list[int], continuation: list[int]) -> ScheduledBatch:
    """One sampling chunk per position: row k holds the logits that choose continuation[k]."""
    chunks, next_block = [], 0
    for k in range(len(continuation)):
        tokens = tuple(prompt + continuation[:k])
        blocks = -(-len(tokens) // BLOCK)
        chunks.append(ScheduledChunk(f"p{k}", tokens, 0, tuple(range(next_block, next_block + blocks)), True,
                                     SamplingParams(), 0, True))
        next_block += blocks
    return ScheduledBatch(chunks)


def _logits(llm: LLM, batch: ScheduledBatch) -> torch.Tensor:
    executor = llm.engine.executor
    if hasattr(executor, "logits_for"):  # tensor-parallel: gathered full-vocabulary logits
        return executor.logits_for(batch).float().cpu()
    return executor.runner.logits_for(batch).float().cpu()


def _run(tp: int, continuations: list[list[int]] | None):
    """(greedy tokens, teacher-forced logits per prompt) at tensor_parallel_size tp."""
    prompts = _prompts()
    llm = LLM(MODEL, tensor_parallel_size=tp, **ENGINE)
    try:
        tokens = [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=HORIZON, ignore_eos=True))]
        forced = continuations or tokens
        logits = [_logits(llm, _teacher_forced_batch(p, c)) for p, c in zip(prompts, forced)]
    finally:
        llm.close()
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    return tokens, logits


@pytest.fixture(scope="module")
def reference():
    return _run(1, None)


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_matches_tp1_in_bf16(reference, tp):
    if torch.cuda.device_count() < tp:
        pytest.skip(f"needs {tp} CUDA devices")
    ref_tokens, ref_logits = reference
    tokens, logits = _run(tp, ref_tokens)
    clear = total = 0
    for prompt_index, (ref, got, ref_seq, got_seq) in enumerate(zip(ref_logits, logits, ref_tokens, tokens)):
        assert got.shape == ref.shape == (HORIZON, 128256)
        rel = ((got - ref).norm() / ref.norm()).item()
        assert rel < REL_TOL, f"prompt {prompt_index}: relative logit error {rel:.4f}"
        top2 = ref.topk(2, dim=-1).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        for k, margin in enumerate(margins):
            total += 1
            if margin > MARGIN:
                clear += 1
                assert got[k].argmax().item() == ref_seq[k], f"prompt {prompt_index} position {k}"
        first_ambiguous = next((k for k, m in enumerate(margins) if m <= MARGIN), HORIZON)
        assert got_seq[:first_ambiguous] == ref_seq[:first_ambiguous], f"prompt {prompt_index}"
    # Random weights give flat logits, so many top-2 margins are small (10 of 32 positions were
    # clear on two H100s, 2026-11-25); a handful keeps the token checks from passing vacuously.
    assert clear >= 6, f"only {clear} of {total} positions had a clear greedy choice"
