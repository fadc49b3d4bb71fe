"""On a GPU, bf16 greedy output agrees with the CPU float32 path on the embedded SmolLM2."""

import pytest
import torch

from adaptive_sarathi import LLM, SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.embedded_model]

PROMPTS = [
    "The capital of France is",
    "def quicksort(xs):",
    "Water boils at",
    "The three primary colors are",
    "In 1969, the first humans",
    "A haiku about autumn:\n",
    "import numpy as np\n",
    "The largest planet in the solar system is",
]


def test_bf16_gpu_matches_cpu_float32_greedy():
    params = SamplingParams(max_tokens=32, ignore_eos=True)
    cpu = LLM(None, device="cpu", dtype="float32").generate(PROMPTS, params)
    # A small cache: the default takes 90% of the card, which stays held until the engine's
    # reference cycles are collected and starves the tests after this one.
    gpu = LLM(None, device="cuda", dtype="bfloat16", num_kv_blocks=512).generate(PROMPTS, params)
    same = sum(a.token_ids == b.token_ids for a, b in zip(cpu, gpu))
    assert same >= 6, f"only {same} of 8 prompts agree over 32 tokens"


def test_bf16_gpu_logits_within_tolerance():
    """Prefill logits of every prompt against the float32 CPU path. The bounds are bf16's own
    spread, not a tuning: the same model run in bf16 by torch's CPU kernels measured a mean
    relative error of 1.22e-2 (worst prompt 3.65e-2) against float32, the H100 1.22e-2 (worst
    3.09e-2), on 2026-11-25; weights rounded to bf16 alone account for most of it."""
    from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk

    def logits(device, dtype):
        llm = LLM(None, device=device, dtype=dtype, num_kv_blocks=64)
        rows = []
        for prompt in PROMPTS:
            ids = llm.tokenizer.encode(prompt)
            chunk = ScheduledChunk("r", tuple(ids), 0, tuple(range(4)), True, SamplingParams(), 0, True)
            rows.append(llm.engine.executor.runner.logits_for(ScheduledBatch([chunk]))[0].float().cpu())
        return torch.stack(rows)

    ref, got = logits("cpu", "float32"), logits("cuda", "bfloat16")
    rel = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert rel.mean() < 2e-2, f"mean relative error {rel.mean():.3e} ({rel.tolist()})"
    assert rel.max() < 5e-2, f"worst prompt's relative error {rel.max():.3e}"
    assert torch.equal(got.argmax(-1), ref.argmax(-1)), "the next greedy token differs"
