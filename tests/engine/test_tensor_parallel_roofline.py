"""The roofline model's tensor-parallel accounting: per-rank weights, KV and FLOPs, and the
all-reduces (2 per layer + the embedding's, ring cost 2(N-1)/N x bytes / link bandwidth + latency)."""

from __future__ import annotations

import pytest

from adaptive_sarathi.engine.latency.roofline import ALLREDUCE_LATENCY_S, H100_NVLINK_BANDWIDTH, roofline_from_spec
from adaptive_sarathi.engine.latency.shape import StepShape

DECODE_64 = StepShape(num_prefill_tokens=0, num_decode_tokens=64, num_prefill_seqs=0, sum_context_tokens=64 * 2048)
PREFILL_2048 = StepShape(num_prefill_tokens=2048, num_decode_tokens=0, num_prefill_seqs=1, sum_context_tokens=2048)


def test_tp1_is_the_single_gpu_model():
    plain, tp1 = roofline_from_spec("h100:llama-3-8b"), roofline_from_spec("h100:llama-3-8b", tensor_parallel_size=1)
    for shape in (DECODE_64, PREFILL_2048):
        assert tp1.step_time(shape) == plain.step_time(shape)
    assert tp1.communication_s(512, 4) == 0.0 and tp1.num_allreduces == 0


@pytest.mark.parametrize("n", [2, 4, 8])
def test_all_reduce_cost_is_the_ring_formula(n):
    m = roofline_from_spec("h100:llama-3-8b", tensor_parallel_size=n)
    tokens, hidden, layers, vocab = 64, 4096, 32, 128256
    one = ALLREDUCE_LATENCY_S + 2 * (n - 1) / n * tokens * hidden * 2 / H100_NVLINK_BANDWIDTH
    assert m.allreduce_s(tokens) == pytest.approx(one)
    assert m.num_allreduces == 2 * layers + 1
    gather = ALLREDUCE_LATENCY_S + (n - 1) / n * tokens * vocab * 4 / H100_NVLINK_BANDWIDTH
    assert m.communication_s(tokens, tokens) == pytest.approx((2 * layers + 1) * one + gather)
    # The step adds the communication to the per-rank roofline: a slower link changes the step by
    # exactly the change in communication time.
    slow = roofline_from_spec("h100:llama-3-8b", tensor_parallel_size=n, link_bandwidth=H100_NVLINK_BANDWIDTH / 10)
    extra = slow.communication_s(tokens, tokens) - m.communication_s(tokens, tokens)
    assert slow.step_time(DECODE_64) - m.step_time(DECODE_64) == pytest.approx(extra)


def test_per_rank_weights_and_kv_split():
    one, two = roofline_from_spec("h100:llama-3-8b"), roofline_from_spec("h100:llama-3-8b", tensor_parallel_size=2)
    assert two.rank_weight_bytes == one.weight_bytes / 2
    assert two.rank_kv_bytes_per_token == one.kv_bytes_per_token // 2
    # Half the weights per card frees room for more than twice the blocks.
    assert two.num_kv_blocks(16) > 2 * one.num_kv_blocks(16)
    # A bandwidth-bound decode step gets faster, but by less than 2x (communication, fixed overhead).
    assert one.step_time(DECODE_64) / 2 < two.step_time(DECODE_64) < one.step_time(DECODE_64)
    # KV heads replicate when ranks outnumber them: 16 ranks of llama-3-8b (8 KV heads) hold one each.
    sixteen = roofline_from_spec("h100:llama-3-8b", tensor_parallel_size=16)
    assert sixteen.rank_kv_bytes_per_token == one.kv_bytes_per_token // 8


def test_sizes_that_do_not_split_the_model_are_refused():
    with pytest.raises(ValueError, match="tensor_parallel_size=3 .*num_heads=32"):
        roofline_from_spec("h100:llama-3-8b", tensor_parallel_size=3)
