"""Our Llama-family forward equals transformers' on random tiny models of every supported variant,
whole-prompt and chunked, so the model code is checked independently of any real checkpoint."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk  # noqa: E402
from adaptive_sarathi.engine.loaders import resolve_model  # noqa: E402
from adaptive_sarathi.engine.model.build import build_model  # noqa: E402
from adaptive_sarathi.engine.model_runner import ModelRunner  # noqa: E402
from adaptive_sarathi.engine.sampling_params import SamplingParams  # noqa: E402
from adaptive_sarathi.kernels.attention import paged_attention_reference  # noqa: E402

BASE = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
VARIANTS = {
    "llama2-untied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "llama3-rope-scaling": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
    "smollm2-tied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True, rope_theta=100000.0)),
    "qwen2-bias": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=False)),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    cfg_cls, model_cls, extra = VARIANTS[request.param]
    torch.manual_seed(0)
    config = getattr(transformers, cfg_cls)(**BASE, **extra)
    hf = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():  # biases start at zero; make them matter
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ours = build_model(resolve_model(str(path)), torch.device("cpu"), torch.float32)
    return hf, ours


def run_chunks(model, token_ids, chunk_sizes, block_size=8):
    """Feed `token_ids` chunk by chunk through one KV cache; return the logits of each chunk's
    last position [len(chunk_sizes), vocab]."""
    runner = ModelRunner(model, num_blocks=64, block_size=block_size, attention=paged_attention_reference)
    table = tuple(range(-(-len(token_ids) // block_size)))
    rows, start = [], 0
    for size in chunk_sizes:
        chunk = ScheduledChunk("r", tuple(token_ids[start:start + size]), start, table, True, SamplingParams(), 0,
                               True)
        rows.append(runner.logits_for(ScheduledBatch([chunk]))[0])
        start += size
    return torch.stack(rows)


def test_prefill_logits_match(pair):
    hf, ours = pair
    ids = torch.randint(0, BASE["vocab_size"], (1, 40), generator=torch.Generator().manual_seed(1))
    expected = hf(ids).logits[0]
    # Whole prompt in one chunk, then chunked 7+13+1+19: each chunk's last row must match.
    got = run_chunks(ours, ids[0].tolist(), [40])
    torch.testing.assert_close(got[0], expected[39], rtol=1e-4, atol=1e-4)
    got = run_chunks(ours, ids[0].tolist(), [7, 13, 1, 19])
    torch.testing.assert_close(got, expected[[6, 19, 20, 39]], rtol=1e-4, atol=1e-4)


def test_long_positions_match(pair):
    # Positions past the llama3 original window exercise the scaled frequencies.
    hf, ours = pair
    ids = torch.randint(0, BASE["vocab_size"], (1, 150), generator=torch.Generator().manual_seed(2))
    expected = hf(ids).logits[0]
    got = run_chunks(ours, ids[0].tolist(), [100, 50])
    torch.testing.assert_close(got, expected[[99, 149]], rtol=1e-4, atol=1e-4)
