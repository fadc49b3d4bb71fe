"""Decode steps replayed from CUDA graphs: which sizes are captured, which steps qualify, and on a
GPU, the same logits and tokens as the eager forward."""

import random

import pytest
import torch

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk
from adaptive_sarathi.engine.cuda_graph import DecodeGraphs, capture_sizes, decode_graphs_supported
from adaptive_sarathi.engine.input_prep import prepare_inputs
from adaptive_sarathi.engine.sampling_params import SamplingParams

BLOCK = 4


def test_capture_sizes_cover_every_batch_with_little_padding():
    sizes = capture_sizes(256)
    assert sizes[:4] == [1, 2, 4, 8] and sizes[-1] == 256
    for n in range(1, 257):
        padded = min(s for s in sizes if s >= n)
        assert padded - n < 16
    assert capture_sizes(1) == [1]
    assert capture_sizes(20) == [1, 2, 4, 8, 16, 20]
    with pytest.raises(ValueError, match="max_batch"):
        capture_sizes(0)


def test_graphs_need_cuda():
    assert not decode_graphs_supported(torch.device("cpu"), "auto")
    assert not decode_graphs_supported(torch.device("cpu"), "torch")


def decode_chunk(rid: str, context_len: int, blocks: list[int]) -> ScheduledChunk:
    return ScheduledChunk(rid, (7,), context_len - 1, tuple(blocks), True, SamplingParams(), 1, False)


def graphs_for(max_batch: int, max_context_len: int) -> DecodeGraphs:
    return DecodeGraphs(lambda *a: None, torch.device("cpu"), capture_sizes(max_batch), max_context_len, BLOCK,
                        scratch_block=99, splits_for=lambda b: 1)


def test_only_decode_only_steps_within_the_limits_fit():
    graphs = graphs_for(max_batch=4, max_context_len=32)
    decodes = [decode_chunk(f"r{i}", 9 + i, [i, i + 10, i + 20]) for i in range(4)]
    assert graphs.fits(prepare_inputs(ScheduledBatch(decodes), BLOCK))
    # Too many sequences, too long a context, a prefill chunk.
    assert not graphs_for(max_batch=3, max_context_len=32).fits(prepare_inputs(ScheduledBatch(decodes), BLOCK))
    assert not graphs_for(max_batch=4, max_context_len=11).fits(prepare_inputs(ScheduledBatch(decodes), BLOCK))
    prefill = ScheduledChunk("p", (1, 2, 3), 0, (5,), True, SamplingParams(), 0, True)
    assert not graphs.fits(prepare_inputs(ScheduledBatch(decodes[:2] + [prefill]), BLOCK))
    # A prompt's 1-token chunk that does not sample runs in the graph too (its row is not read).
    silent = ScheduledChunk("s", (1,), 0, (6,), False, SamplingParams(), 0, True)
    assert graphs.fits(prepare_inputs(ScheduledBatch(decodes[:2] + [silent]), BLOCK))


@pytest.mark.gpu
def test_graph_replay_matches_eager_forward_on_random_decode_steps():
    from adaptive_sarathi.engine.factory import EngineArgs, create_engine

    engine = create_engine(EngineArgs(model="dummy:smollm2-135m", device="cuda", dtype="bfloat16",
                                      num_kv_blocks=4096, max_model_len=1024, max_num_seqs=48))
    runner = engine.executor.runner
    assert runner.graphs is not None
    rng = random.Random(0)
    for batch_size in (1, 3, 17, 48):
        chunks = []
        free = list(range(runner.num_blocks))
        rng.shuffle(free)
        for i in range(batch_size):
            ctx = rng.randrange(1, 1000)
            blocks = [free.pop() for _ in range(-(-ctx // 16))]
            # Every fifth row a prompt's 1-token chunk that samples nothing.
            chunks.append(ScheduledChunk(f"r{i}", (rng.randrange(1000),), ctx - 1, tuple(blocks), i % 5 != 4,
                                         SamplingParams(), 1, i % 5 == 4))
        inputs = runner.prepare(ScheduledBatch(chunks))
        assert runner.graphs.fits(inputs)
        with torch.inference_mode():
            graphed = runner.model.compute_logits(runner.graphs.replay(inputs))
            eager = runner.eager_forward(inputs)
        rel = ((graphed - eager).norm() / eager.norm()).item()
        assert rel < 1e-2, f"batch {batch_size}: relative error {rel:.2e}"
        agree = (graphed.argmax(-1) == eager.argmax(-1)).float().mean().item()
        assert agree >= 0.9, f"batch {batch_size}: argmax agrees on {agree:.0%} of rows"


@pytest.mark.gpu
@pytest.mark.parametrize("device_split_min_context", [None, 1024])
def test_mixed_graph_replay_matches_eager_forward_on_random_steps(device_split_min_context, monkeypatch):
    """With the device-split prefill kernel off and on (set before the graphs are captured; the
    eager steps of contexts under 1024 then run the other kernel)."""
    from adaptive_sarathi.engine.factory import EngineArgs, create_engine
    from adaptive_sarathi.kernels.attention import triton_prefill_split

    monkeypatch.setattr(triton_prefill_split, "DEVICE_SPLIT_MIN_CONTEXT", device_split_min_context)
    engine = create_engine(EngineArgs(model="dummy:smollm2-135m", device="cuda", dtype="bfloat16",
                                      num_kv_blocks=4096, max_model_len=2048, max_num_seqs=48))
    runner = engine.executor.runner
    assert runner.mixed_graphs is not None
    rng = random.Random(1)
    # (decodes, [(cached, new) per chunk]): one prompt, chunks after a prefix, a full decode batch,
    # many short prompts, a step of exactly the largest size, short chunks after long prefixes.
    steps = [(0, [(0, 100)]), (5, [(0, 300), (200, 50)]), (48, [(100, 400)]), (20, [(0, 37)] * 10),
             (0, [(0, 2048)]), (0, [(1900, 100)]), (3, [(1500, 60), (0, 20)])]
    for decodes, prefills in steps:
        free = list(range(runner.num_blocks))
        rng.shuffle(free)
        chunks = []
        for i in range(decodes):
            ctx = rng.randrange(1, 1000)
            blocks = [free.pop() for _ in range(-(-ctx // 16))]
            chunks.append(ScheduledChunk(f"d{i}", (rng.randrange(1000),), ctx - 1, tuple(blocks), True,
                                         SamplingParams(), 1, False))
        for i, (cached, new) in enumerate(prefills):
            blocks = [free.pop() for _ in range(-(-(cached + new) // 16))]
            ids = tuple(rng.randrange(1000) for _ in range(new))
            chunks.append(ScheduledChunk(f"p{i}", ids, cached, tuple(blocks), True, SamplingParams(), 0, True))
        inputs = runner.prepare(ScheduledBatch(chunks))
        assert runner.mixed_graphs.fits(inputs)
        with torch.inference_mode():
            graphed = runner.model.compute_logits(runner.mixed_graphs.replay(inputs))
            eager = runner.eager_forward(inputs)
        rel = ((graphed - eager).norm() / eager.norm()).item()
        assert rel < 1e-2, f"step {decodes}/{prefills}: relative error {rel:.2e}"
        agree = (graphed.argmax(-1) == eager.argmax(-1)).float().mean().item()
        assert agree >= 0.9, f"step {decodes}/{prefills}: argmax agrees on {agree:.0%} of rows"


@pytest.mark.gpu
@pytest.mark.embedded_model
def test_engine_with_graphs_generates_like_eager():
    from adaptive_sarathi import LLM

    prompts = ["The capital of France is", "def quicksort(xs):", "Water boils at", "In 1969, the first humans",
               "The three primary colors are", "A haiku about autumn:\n", "import numpy as np\n",
               "The largest planet in the solar system is"]
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    # A small cache each, so both engines fit the card at once.
    graphed = LLM(None, device="cuda", dtype="bfloat16", num_kv_blocks=512).generate(prompts, params)
    eager = LLM(None, device="cuda", dtype="bfloat16", num_kv_blocks=512, enforce_eager=True).generate(prompts, params)
    same = sum(a.token_ids == b.token_ids for a, b in zip(graphed, eager))
    # Split-K partitions differ between the two paths, so a near-tie may round either way.
    assert same >= 7, f"only {same} of 8 prompts agree between graph replay and eager decode"
