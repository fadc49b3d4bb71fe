"""Tensor parallelism on the CPU over gloo: the weight split is exact, TP=N generates the same
greedy tokens as TP=1 (the embedded SmolLM2 at TP=3; dummy:tiny at TP=2 and at TP=4, where its
2 KV heads are replicated), sizes that do not split the heads are refused, and a dead worker makes
the driver raise instead of hanging."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import pytest
import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk
from adaptive_sarathi.engine.distributed import ShardSpec, check_tensor_parallel_size, valid_tensor_parallel_sizes
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.loaders.dummy import DUMMY_PRESETS
from adaptive_sarathi.engine.model.build import init_random_weights
from adaptive_sarathi.engine.model.llama import LlamaForCausalLM
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.llm import LLM

GREEDY_16 = SamplingParams(max_tokens=16, ignore_eos=True)
TOKEN_PROMPTS = [[1, 5, 9, 20, 33, 7, 300], [7, 7, 7, 100, 200, 3], [400, 2, 17, 88, 91, 250, 511, 4, 60]]
TEXT_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


def _tokens(llm: LLM, prompts) -> list[list[int]]:
    return [out.token_ids for out in llm.generate(prompts, GREEDY_16)]


# -- the split, without processes -------------------------------------------------------------------

@pytest.mark.parametrize("arch,size", [("tiny", 2), ("tiny", 4), ("smollm2-135m", 3), ("qwen2-7b", 4)])
def test_slices_of_every_rank_reassemble_the_full_tensors(arch, size):
    c = DUMMY_PRESETS[arch]
    d = c.head_dim
    q, kv = torch.randn(c.num_heads * d, 8), torch.randn(c.num_kv_heads * d, 8)
    specs = [ShardSpec(c, r, size) for r in range(size)]
    assert torch.equal(torch.cat([s.shard_hf("model.layers.0.self_attn.q_proj.weight", q) for s in specs]), q)
    o = torch.randn(8, c.num_heads * d)
    assert torch.equal(torch.cat([s.shard_hf("layers.0.self_attn.o_proj.weight", o) for s in specs], dim=1), o)
    k_parts = [s.shard_hf("layers.0.self_attn.k_proj.weight", kv) for s in specs]
    if c.num_kv_heads >= size:
        assert torch.equal(torch.cat(k_parts), kv)
    else:  # replicated: rank r holds the KV head its query heads read
        group = c.num_heads // c.num_kv_heads
        for s, part in zip(specs, k_parts):
            head = s.rank * s.num_heads // group
            assert torch.equal(part, kv[head * d:(head + 1) * d])
    vocab = torch.randn(c.vocab_size, 4)
    rows = torch.cat([s.shard_hf("lm_head.weight", vocab) for s in specs])
    assert torch.equal(rows[:c.vocab_size], vocab) and not rows[c.vocab_size:].any()


def test_fused_layouts_are_sharded_per_component():
    c = DUMMY_PRESETS["tiny"]  # 4 heads, 2 KV heads, head_dim 16, intermediate 128
    spec = ShardSpec(c, 1, 2)
    full = torch.arange((4 + 2 + 2) * 16, dtype=torch.float32).unsqueeze(1)  # rows tagged by index
    local = spec.shard_param("layers.0.self_attn.qkv_proj.weight", full).squeeze(1).long().tolist()
    q_rows, k_rows, v_rows = list(range(32, 64)), list(range(64 + 16, 64 + 32)), list(range(96 + 16, 96 + 32))
    assert local == q_rows + k_rows + v_rows  # rank 1: query heads 2-3, KV head 1 of k and of v
    gate_up = torch.arange(256, dtype=torch.float32).unsqueeze(1)
    local = spec.shard_param("layers.0.mlp.gate_up_proj.weight", gate_up).squeeze(1).long().tolist()
    assert local == list(range(64, 128)) + list(range(128 + 64, 256))


# SmolLM2's head layout (9 query heads, 3 KV heads, tied embeddings) at a tiny width.
SMALL_SMOLLM2 = dataclasses.replace(DUMMY_PRESETS["smollm2-135m"], hidden_size=72, head_dim=8, intermediate_size=48,
                                    num_layers=2, vocab_size=100)
SMALL_QWEN2 = dataclasses.replace(DUMMY_PRESETS["qwen2-7b"], hidden_size=56, head_dim=8, intermediate_size=32,
                                  num_layers=2, vocab_size=101)  # QKV biases, untied head, vocab padded at TP=4


@pytest.mark.parametrize("config,size", [(DUMMY_PRESETS["tiny"], 2), (DUMMY_PRESETS["tiny"], 4), (SMALL_SMOLLM2, 3),
                                         (SMALL_QWEN2, 4)])
def test_random_weights_are_slices_of_the_unsharded_models(config, size):
    c = config
    full = LlamaForCausalLM(c, max_positions=64)
    init_random_weights(full, seed=3)
    full_params = dict(full.named_parameters())
    assert not c.tie_word_embeddings or full.lm_head.weight is full.embed_tokens.weight
    for rank in range(size):
        spec = ShardSpec(c, rank, size)
        local = LlamaForCausalLM(spec.local_config(), max_positions=64)
        init_random_weights(local, seed=3, shard=spec)
        for name, param in local.named_parameters():
            assert torch.equal(param, spec.shard_param(name, full_params[name])), name


def test_sizes_that_do_not_split_the_heads_are_refused():
    c = DUMMY_PRESETS["smollm2-135m"]
    assert valid_tensor_parallel_sizes(c) == [1, 3]
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2 .*num_heads=9, num_kv_heads=3.*valid sizes: 1, 3"):
        check_tensor_parallel_size(c, 2)
    # 16 and 32 ranks replicate llama-3-8b's 8 KV heads.
    assert valid_tensor_parallel_sizes(DUMMY_PRESETS["llama-3-8b"]) == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ValueError, match="tensor_parallel_size=0"):
        EngineArgs(tensor_parallel_size=0)


@pytest.mark.embedded_model
def test_engine_refuses_a_size_that_does_not_divide_the_default_models_heads():
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2 cannot split .*num_heads=9.*valid sizes: 1, 3"):
        create_engine(EngineArgs(model=None, device="cpu", tensor_parallel_size=2))


# -- processes over gloo ----------------------------------------------------------------------------

@pytest.mark.embedded_model
@pytest.mark.slow
def test_smollm2_tp3_generates_the_tp1_greedy_tokens():
    assert resolve_model(None).config.num_heads == 9
    kwargs = dict(device="cpu", dtype="float32", num_kv_blocks=32)
    baseline = LLM(None, **kwargs)
    expected = _tokens(baseline, TEXT_PROMPTS)
    del baseline
    with LLM(None, tensor_parallel_size=3, **kwargs) as llm:
        assert _tokens(llm, TEXT_PROMPTS) == expected


def _prefill_batch(tokens: list[int]) -> ScheduledBatch:
    return ScheduledBatch([ScheduledChunk("r", tuple(tokens), 0, tuple(range(4)), True, SamplingParams(), 0, True)])


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.slow
def test_dummy_tiny_tp_generates_the_tp1_greedy_tokens(size):
    kwargs = dict(device="cpu", dtype="float32", num_kv_blocks=64)
    baseline = LLM("dummy:tiny", **kwargs)
    expected = _tokens(baseline, TOKEN_PROMPTS)
    logits = baseline.engine.executor.runner.logits_for(_prefill_batch(TOKEN_PROMPTS[2]))
    del baseline
    with LLM("dummy:tiny", tensor_parallel_size=size, **kwargs) as llm:
        assert _tokens(llm, TOKEN_PROMPTS) == expected
        tp_logits = llm.engine.executor.logits_for(_prefill_batch(TOKEN_PROMPTS[2]))
    assert tp_logits.shape == logits.shape == (1, DUMMY_PRESETS["tiny"].vocab_size)
    torch.testing.assert_close(tp_logits, logits, rtol=1e-5, atol=1e-5)


def test_a_dead_worker_makes_the_driver_raise_and_shut_down():
    llm = LLM("dummy:tiny", device="cpu", dtype="float32", num_kv_blocks=64, tensor_parallel_size=2)
    session = llm.engine.executor.session
    worker = session.procs[0]
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(10)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="tensor-parallel"):
        llm.generate(TOKEN_PROMPTS[:1], GREEDY_16)
    assert time.monotonic() - started < 30
    llm.close()  # idempotent after the failure
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_profiler_runs_at_tp2_and_tags_the_csv(tmp_path):
    from adaptive_sarathi.engine.latency.profile import load_profile
    from adaptive_sarathi.engine.profiling.profile_shapes import ProfileShape
    from adaptive_sarathi.engine.profiling.profiler import ProfileConfig, run_profile

    config = ProfileConfig(model="dummy:tiny", device="cpu", out=str(tmp_path / "tp2.csv"), repeats=2, warmup=1,
                           cpu_kv_cache_bytes=1 << 22, tensor_parallel_size=2)
    shapes = [ProfileShape(num_decodes=4, decode_context_len=64), ProfileShape(prefill_chunks=((32, 0),)),
              ProfileShape(num_decodes=2, decode_context_len=32, prefill_chunks=((16, 16),))]
    summary = run_profile(config, shapes, progress=False)
    assert summary.num_rows == 3 and not summary.skipped
    profile = load_profile(summary.path)
    assert profile.tags["tensor_parallel_size"] == "2"
    assert not torch.distributed.is_initialized()


def test_simulate_flag_splits_the_roofline_and_checks_a_profiles_size(tmp_path, capsys):
    from adaptive_sarathi.cli import main

    profile = tmp_path / "p.csv"
    profile.write_text("# tensor_parallel_size: 2\nnum_prefill_tokens,num_decode_tokens,num_prefill_seqs,"
                       "sum_context_tokens,duration_s\n0,1,0,100,0.01\n0,8,0,800,0.012\n128,0,1,128,0.02\n"
                       "512,0,1,512,0.05\n")
    trace = tmp_path / "trace.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{100 + 7 * i},{20 + i}\n" for i in range(20)))
    common = ["simulate", "--trace", str(trace), "--qps", "2", "--num-requests", "20", "--no-progress"]
    assert main(common + ["--profile", str(profile), "--num-kv-blocks", "1000"]) == 2
    assert "measured at tensor_parallel_size=2" in capsys.readouterr().err
    assert main(common + ["--profile", str(profile), "--num-kv-blocks", "1000", "--tensor-parallel-size", "2"]) == 0
    assert main(common + ["--roofline", "h100:llama-3-8b", "--tensor-parallel-size", "3"]) == 2
    assert "tensor_parallel_size=3" in capsys.readouterr().err


@pytest.mark.slow
def test_hf_checkpoint_with_qkv_bias_and_untied_head_loads_sharded(tmp_path):
    """Real-file loading at TP=2 of a Qwen2-style checkpoint (QKV biases, untied LM head, a vocab
    of 301 rows padded to 2 x 151): the same logits as TP=1."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=301, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      tie_word_embeddings=False)
    hf = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # biases start at zero; make them matter
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    hf.save_pretrained(tmp_path)
    kwargs = dict(device="cpu", dtype="float32", num_kv_blocks=64)
    batch = _prefill_batch([5, 17, 300, 42, 8, 99, 123, 7, 250, 1])
    baseline = LLM(str(tmp_path), **kwargs)
    expected = baseline.engine.executor.runner.logits_for(batch)
    del baseline
    with LLM(str(tmp_path), tensor_parallel_size=2, **kwargs) as llm:
        got = llm.engine.executor.logits_for(batch)
    assert got.shape == expected.shape == (1, 301)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
