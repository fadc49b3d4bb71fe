"""Steps with prefill chunks run padded, as their CUDA graphs run them (engine/mixed_graphs.py):
the padded forward over the graphs' static buffers gives the eager forward's hidden states and
writes the KV cache exactly as it does. Without a GPU the Triton kernels run in the interpreter
(conftest.py), so the padding is checked here without capturing graphs; the `gpu` test replays
real graphs."""

import random

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the padding in the CPU interpreter; on a "
                                "GPU, tests/engine/test_cuda_graph.py replays the real graphs")

from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk  # noqa: E402
from adaptive_sarathi.engine.input_prep import prepare_inputs  # noqa: E402
from adaptive_sarathi.engine.loaders import resolve_model  # noqa: E402
from adaptive_sarathi.engine.mixed_graphs import MixedGraphs, mixed_capture_sizes  # noqa: E402
from adaptive_sarathi.engine.model.build import build_model  # noqa: E402
from adaptive_sarathi.engine.model_runner import ModelRunner  # noqa: E402
from adaptive_sarathi.engine.sampling_params import SamplingParams  # noqa: E402
from adaptive_sarathi.kernels.attention.triton_backend import triton_paged_attention  # noqa: E402

BLOCK = 8
MAX_CONTEXT = 128


def test_capture_sizes_cover_every_step_with_little_padding():
    sizes = mixed_capture_sizes(8192)
    assert sizes[0] == 64 and sizes[-1] == 8192
    for n in range(1, 8193):
        padded = min(s for s in sizes if s >= n)
        assert padded - n < (64 if n <= 1024 else 128 if n <= 2048 else 512)
    assert mixed_capture_sizes(3000) == mixed_capture_sizes(2048) + [2560, 3000]
    assert mixed_capture_sizes(100) == [64, 100]
    assert mixed_capture_sizes(10) == [10]
    with pytest.raises(ValueError, match="max_tokens"):
        mixed_capture_sizes(0)


def random_step(rng: random.Random, decodes: int, chunks: list[tuple[int, int]], free: list[int]) -> ScheduledBatch:
    """`decodes` decodes of random contexts, then prefill chunks (cached, new); each request gets
    blocks from `free`. The last chunk completes its prompt and samples."""
    out = []

    def table(context: int) -> tuple[int, ...]:
        return tuple(free.pop() for _ in range(-(-context // BLOCK)))

    for i in range(decodes):
        ctx = rng.randrange(2, MAX_CONTEXT)
        out.append(ScheduledChunk(f"d{i}", (rng.randrange(512),), ctx - 1, table(ctx), True, SamplingParams(), 1,
                                  False))
    for i, (cached, new) in enumerate(chunks):
        ids = tuple(rng.randrange(512) for _ in range(new))
        out.append(ScheduledChunk(f"p{i}", ids, cached, table(cached + new), i == len(chunks) - 1, SamplingParams(),
                                  0, True))
    return ScheduledBatch(out)


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    model = build_model(resolve_model("dummy:tiny"), torch.device("cpu"), torch.float32)
    return ModelRunner(model, num_blocks=200, block_size=BLOCK, attention=triton_paged_attention)


def graphs_of(runner: ModelRunner, max_decodes: int = 4, max_prefills: int = 3) -> MixedGraphs:
    return MixedGraphs(runner._hidden, torch.device("cpu"), [16, 32, 64], max_decodes, MAX_CONTEXT, BLOCK,
                       splits_for=lambda decodes: 2, max_prefills=max_prefills)


def test_padded_forward_equals_eager(runner):
    rng = random.Random(0)
    graphs = graphs_of(runner)
    # The first step fills more of the buffers than the second, whose padding must not reuse the
    # stale slots, rows and spans it leaves.
    steps = [([(0, 30), (17, 20)], 4), ([(5, 9), (0, 3), (40, 21)], 2), ([(0, 12)], 0)]
    for chunks, decodes in steps:
        free = list(range(runner.num_blocks))
        rng.shuffle(free)
        inputs = prepare_inputs(random_step(rng, decodes, chunks, free), BLOCK)
        assert graphs.fits(inputs)
        with torch.inference_mode():
            eager = runner.hidden(inputs)
            caches = [(k.clone(), v.clone()) for k, v in runner.kv_caches]
            size = graphs.load(inputs)
            padded = graphs.padded_forward(size)()[:eager.shape[0]]
        assert size >= inputs.num_tokens and size in graphs.sizes
        # Stale decode rows would be recomputed and then overwritten by the prefill kernel: wasted
        # work that the outputs cannot show, so the padding itself is checked.
        assert not graphs.decode_lens[inputs.attention.num_decode_tokens:].any()
        torch.testing.assert_close(padded, eager, rtol=1e-5, atol=1e-5)
        # The padded run rewrote the step's own K/V, identically, and nothing else.
        for (k, v), (k0, v0) in zip(runner.kv_caches, caches):
            assert torch.equal(k, k0) and torch.equal(v, v0)


def test_only_steps_within_the_limits_fit(runner):
    rng = random.Random(1)
    graphs = graphs_of(runner, max_decodes=2, max_prefills=2)

    def fits(decodes: int, chunks: list[tuple[int, int]]) -> bool:
        free = list(range(runner.num_blocks))
        return graphs.fits(prepare_inputs(random_step(rng, decodes, chunks, free), BLOCK))

    assert fits(2, [(0, 10), (3, 40)])
    assert not fits(2, [])  # decode-only steps belong to the decode graphs
    assert not fits(3, [(0, 10)])  # more decodes than the graphs have rows for
    assert not fits(0, [(0, 10)] * 3)  # more chunks than spans
    assert not fits(0, [(0, 40), (0, 30)])  # 70 tokens > the largest size, 64
    assert not fits(0, [(100, 40)])  # context 140 > 128


def test_padded_forward_with_the_device_split_kernel(runner, monkeypatch):
    """With DEVICE_SPLIT_MIN_CONTEXT on (and partitions small enough to split these contexts), the
    padded forward equals the eager one, and both equal the forward without the device split: the
    split is decided from the step's real chunks, not from the graph's padding."""
    from functools import partial

    from adaptive_sarathi.kernels.attention import triton_backend, triton_prefill_split

    rng = random.Random(2)
    graphs = graphs_of(runner)
    free = list(range(runner.num_blocks))
    rng.shuffle(free)
    inputs = prepare_inputs(random_step(rng, 2, [(100, 5), (0, 9)], free), BLOCK)
    c = runner.model.config
    config = triton_prefill_split.prefill_config(c.head_dim, torch.float32)
    _, plan = triton_prefill_split.split_plan([5, 9], [100, 0], c.num_heads // c.num_kv_heads, c.num_kv_heads, config,
                                              wave=24, min_partition=16)
    assert max(parts for _, _, parts in plan) > 1  # the chunk after 100 cached tokens splits
    with torch.inference_mode():
        plain = runner.hidden(inputs)
        monkeypatch.setattr(triton_prefill_split, "DEVICE_SPLIT_MIN_CONTEXT", 1)
        monkeypatch.setattr(triton_backend, "prefill_attention_device_split",
                            partial(triton_prefill_split.prefill_attention_device_split, wave=24, min_partition=16))
        eager = runner.hidden(inputs)
        padded = graphs.padded_forward(graphs.load(inputs))()[:eager.shape[0]]
    torch.testing.assert_close(padded, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eager, plain, rtol=1e-4, atol=1e-4)
