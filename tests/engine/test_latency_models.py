"""Latency models: roofline physics, profile interpolation, the linear fit, replay."""

from __future__ import annotations

import pytest

from adaptive_sarathi.engine.latency import (LinearLatencyModel, ProfileRow, ReplayLatencyModel, StepShape,
                                             load_profile, save_profile)
from adaptive_sarathi.engine.latency.roofline import roofline_from_spec
from adaptive_sarathi.engine.stats import StepStats


def prefill(n: int, context: int | None = None) -> StepShape:
    return StepShape(num_prefill_tokens=n, num_decode_tokens=0, num_prefill_seqs=1, sum_context_tokens=context or n)


def decode(n: int, context: int) -> StepShape:
    return StepShape(num_prefill_tokens=0, num_decode_tokens=n, num_prefill_seqs=0, sum_context_tokens=n * context)


# -- roofline -----------------------------------------------------------------------------------

def test_roofline_decode_is_bandwidth_bound_and_prefill_compute_bound():
    m = roofline_from_spec("h100:llama-3-8b")
    weights_s = m.weight_bytes / (3.35e12 * 0.8)
    assert m.step_time(decode(1, 1)) == pytest.approx(weights_s + m.overhead_s, rel=0.01)
    # KV reads: 64 decodes of 4k context read 64 x 4096 x 128 KiB more than one decode.
    extra = m.step_time(decode(64, 4096)) - m.step_time(decode(1, 4096))
    assert extra == pytest.approx(63 * 4096 * 131072 / (3.35e12 * 0.8), rel=0.05)
    # 4096 prompt tokens: ~2 x 7.5e9 x 4096 FLOPs at 70% of 989 TFLOP/s, far above the weight read.
    assert m.step_time(prefill(4096)) > 5 * m.step_time(decode(1, 1))


def test_roofline_tile_quantization_makes_cost_a_step_function_of_tokens():
    m = roofline_from_spec("h100:llama-3-8b")
    t512, t513, t520, t640 = (m.step_time(prefill(n)) for n in (512, 513, 520, 640))
    assert t520 / t512 > 1.15  # a partly filled 128-token tile costs a whole one
    assert t513 == pytest.approx(t520, rel=0.01) and t520 == pytest.approx(t640, rel=0.01)


def test_roofline_is_monotone_in_every_dimension():
    m = roofline_from_spec("a100:mistral-7b")
    for shapes in ([prefill(n) for n in (1, 128, 256, 1024, 4096)],
                   [decode(n, 2048) for n in (1, 16, 64, 256)],
                   [decode(32, c) for c in (128, 1024, 8192)]):
        times = [m.step_time(s) for s in shapes]
        assert times == sorted(times)


def test_roofline_kv_capacity_and_spec_errors():
    blocks = roofline_from_spec("h100:llama-3-8b").num_kv_blocks(16)
    assert 20_000 < blocks < 30_000  # (72 GB - 15 GB of weights) / (16 x 128 KiB)
    assert roofline_from_spec("h200:llama-3-8b").num_kv_blocks(16) > blocks
    with pytest.raises(ValueError, match="unknown GPU 'v100': use one of h100, h200, a100, l40s"):
        roofline_from_spec("v100:llama-3-8b")
    with pytest.raises(ValueError, match="unknown architecture 'gpt-9'"):
        roofline_from_spec("h100:gpt-9")
    with pytest.raises(ValueError, match="use GPU:ARCH"):
        roofline_from_spec("h100")


# -- measured profile ---------------------------------------------------------------------------

def test_profile_round_trip_interpolates_between_and_beyond_grid_points(tmp_path):
    def truth(s: StepShape) -> float:  # piecewise-linear in prefill tokens, linear in the rest
        base = 0.01 + 1e-5 * s.num_prefill_tokens + (0.004 if s.num_prefill_tokens > 512 else 0.0)
        return base + 2e-5 * s.num_decode_tokens + 1e-8 * s.sum_context_tokens + 3e-4 * s.num_prefill_seqs

    shapes = [prefill(n) for n in (0, 256, 512, 520, 1024)] + [decode(n, c) for n in (1, 16, 64) for c in (512, 4096)]
    shapes = [s if s.num_prefill_tokens else StepShape(0, max(s.num_decode_tokens, 1), 0, s.sum_context_tokens)
              for s in shapes]
    path = tmp_path / "profile.csv"
    save_profile(path, [ProfileRow(s, truth(s)) for s in shapes], {"gpu": "h100", "model": "llama-3-8b"})
    model = load_profile(path)
    assert model.tags == {"gpu": "h100", "model": "llama-3-8b"}
    assert model.rms_error_s < 1e-9
    for s in shapes:
        assert model.step_time(s) == pytest.approx(truth(s), rel=1e-6)
    assert model.step_time(prefill(384)) == pytest.approx(truth(prefill(384)), rel=1e-6)  # between knots
    assert model.step_time(prefill(516)) == pytest.approx((truth(prefill(512)) + truth(prefill(520))) / 2, rel=1e-6)
    assert model.step_time(prefill(2048)) == pytest.approx(truth(prefill(2048)), rel=1e-6)  # beyond the last


def test_profile_errors_name_the_line_and_the_fix(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("# gpu: h100\nnum_prefill_tokens,num_decode_tokens,duration_s\n1,0,0.1\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['num_prefill_seqs', 'sum_context_tokens'\]"):
        load_profile(path)
    path.write_text("num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s\n"
                    "1,0,1,1,0.1\n2,0,1,x,0.1\n")
    with pytest.raises(ValueError, match="line 3: token counts must be integers"):
        load_profile(path)
    path.write_text("num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s\n1,0,1,1,0.1\n")
    with pytest.raises(ValueError, match="at least 2 rows"):
        load_profile(path)


# -- linear fit and replay ----------------------------------------------------------------------

def stats(prefill_tokens: int, decodes: int, seqs: int, context: int, duration: float) -> StepStats:
    return StepStats(0, 0.0, duration, StepShape(prefill_tokens, decodes, seqs, context), decodes + seqs, 0, 0, 0, 1,
                     0, 512, 512)


def test_linear_model_recovers_known_coefficients():
    coef = (0.002, 3e-5, 1e-4, 5e-4, 2e-7)
    rows = [(p, d, s, c) for p, s in ((0, 0), (64, 1), (300, 1), (512, 2)) for d in (0, 4, 32) for c in (100, 5000)
            if p or d]
    fitted = LinearLatencyModel.fit([stats(p, d, s, c + p, coef[0] + coef[1] * p + coef[2] * d + coef[3] * s
                                           + coef[4] * (c + p)) for p, d, s, c in rows])
    assert fitted.coefficients == pytest.approx(coef, rel=1e-6)
    assert fitted.step_time(StepShape(100, 10, 1, 1000)) == pytest.approx(
        coef[0] + coef[1] * 100 + coef[2] * 10 + coef[3] + coef[4] * 1000)
    with pytest.raises(ValueError, match="at least 2 steps"):
        LinearLatencyModel.fit([])


def test_replay_plays_back_in_order_and_catches_divergence():
    shapes = [prefill(8), decode(1, 9)]
    replay = ReplayLatencyModel([0.5, 0.25], shapes)
    assert [replay.step_time(s) for s in shapes] == [0.5, 0.25]
    with pytest.raises(IndexError, match="only 2 steps were recorded"):
        replay.step_time(shapes[0])
    with pytest.raises(ValueError, match="step 0: replayed shape"):
        ReplayLatencyModel([0.5], [prefill(8)]).step_time(prefill(9))
