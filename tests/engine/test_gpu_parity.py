"""On a GPU, bf16 greedy output agrees with the CPU float32 path on the embedded SmolLM2."""

import pytest
import torch

from adaptive_sarathi import LLM, SamplingParams

pytestmark = pytest.mark.gpu

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
    gpu = LLM(None, device="cuda", dtype="bfloat16").generate(PROMPTS, params)
    same = sum(a.token_ids == b.token_ids for a, b in zip(cpu, gpu))
    assert same >= 6, f"only {same} of 8 prompts agree over 32 tokens"


def test_bf16_gpu_logits_within_tolerance():
    from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk

    def logits(device, dtype):
        llm = LLM(None, device=device, dtype=dtype, num_kv_blocks=64)
        ids = llm.tokenizer.encode(PROMPTS[0])
        chunk = ScheduledChunk("r", tuple(ids), 0, tuple(range(4)), True, SamplingParams(), 0, True)
        return llm.engine.executor.runner.logits_for(ScheduledBatch([chunk]))[0].float().cpu()

    ref, got = logits("cpu", "float32"), logits("cuda", "bfloat16")
    rel = (got - ref).norm() / ref.norm()
    assert rel < 2e-2, f"relative error {rel:.3e}"
