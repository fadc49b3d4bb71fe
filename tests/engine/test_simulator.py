"""The simulator's clock, executor and metrics, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.batch import ScheduledBatch, ScheduledChunk
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.latency import StepShape
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.simulator import (DUMMY_TOKEN, SimulatedExecutor, SloTargets, VirtualClock,
                                               check_percentile, simulate)
from adaptive_sarathi.workloads import WorkloadRequest


class Constant:
    """Every step takes `seconds`; records the shapes it saw."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.shapes: list[StepShape] = []

    def step_time(self, shape: StepShape) -> float:
        self.shapes.append(shape)
        return self.seconds


def run(requests, budget=512, chunk=None, seconds=0.1, slo=None, blocks=1000, **kw):
    return simulate(requests, SchedulerConfig(name="sarathi", block_size=16), FixedBudget(budget, chunk),
                    Constant(seconds), num_kv_blocks=blocks, slo=slo, **kw)


def test_virtual_clock_moves_only_forward():
    clock = VirtualClock(1.0)
    clock.advance(0.5)
    clock.jump_to(2.0)
    assert clock.now() == 2.0
    with pytest.raises(ValueError, match="durations must be >= 0"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="back"):
        clock.jump_to(1.0)


def test_simulated_executor_advances_the_clock_and_samples_the_dummy_token():
    clock, model = VirtualClock(), Constant(0.25)
    executor = SimulatedExecutor(model, clock, num_kv_blocks=8, block_size=16, record_schedule=True)
    chunk = dict(block_table=(0,), sampling_params=SamplingParams(), num_output_tokens=0)
    batch = ScheduledBatch([ScheduledChunk("a", (0, 0, 0), 0, sample=True, is_prefill=True, **chunk),
                            ScheduledChunk("b", (0, 0), 4, sample=False, is_prefill=True, **chunk)])
    result = executor.execute(batch)
    assert result.sampled_token_ids == {"a": DUMMY_TOKEN}
    assert result.duration_s == clock.now() == 0.25
    assert model.shapes == [StepShape(num_prefill_tokens=5, num_decode_tokens=0, num_prefill_seqs=2,
                                      sum_context_tokens=3 + 6)]
    assert executor.schedule == [{"a": 3, "b": 2}]


def test_one_request_timeline_by_hand():
    # Arrives at 1 s: the clock jumps there; a 10-token prompt is one step, then two decodes.
    r = run([WorkloadRequest(1.0, 10, 3)], record_steps=True)
    (t,) = r.timelines
    assert t.first_scheduled_time == 1.0
    assert t.token_times == pytest.approx([1.1, 1.2, 1.3])
    assert r.ttft.p50 == pytest.approx(0.1) and r.tbt.max == pytest.approx(0.1) and r.e2e.p99 == pytest.approx(0.3)
    assert r.scheduling_delay.max == 0.0
    assert (r.num_steps, r.makespan_s) == (3, pytest.approx(0.3))
    assert [s.num_prefill_tokens for s in r.steps] == [10, 0, 0]
    assert r.tokens_per_s == pytest.approx(13 / 0.3) and r.output_tokens_per_s == pytest.approx(3 / 0.3)


def test_chunked_prefill_and_queueing_under_a_small_budget():
    # Budget 8: the 20-token prompt takes 3 steps (8, 8, 4); the second request, arriving during
    # them, waits for a free token of budget.
    r = run([WorkloadRequest(0.0, 20, 2), WorkloadRequest(0.05, 4, 2)], budget=8, record_schedule=True)
    assert r.schedule == ({"0": 8}, {"0": 8}, {"0": 4, "1": 4}, {"0": 1, "1": 1})
    first, second = r.timelines
    assert first.ttft == pytest.approx(0.3) and second.ttft == pytest.approx(0.25)
    assert second.scheduling_delay == pytest.approx(0.15)


def test_budget_statistics_and_slo_attainment():
    # Request 0 meets both targets; request 1 queues behind it and misses the TTFT target.
    requests = [WorkloadRequest(0.0, 8, 3), WorkloadRequest(0.0, 8, 3)]
    r = run(requests, budget=8, chunk=8, slo=SloTargets(ttft_s=0.15, tbt_s=0.15))
    assert (r.budget.token_budget_mean, r.budget.token_budget_min, r.budget.max_chunk_max) == (8, 8, 8)
    assert r.slo.ttft_attainment == 0.5 and r.slo.tbt_attainment == 1.0 and r.slo.attainment == 0.5
    assert r.slo.goodput_rps == pytest.approx(1 / r.makespan_s)
    assert not r.slo.percentiles_met  # P99 TTFT (about 0.3 s) is over 0.15 s
    assert r.slo.ttft_met is False and r.slo.tbt_met is True
    d = r.to_dict()
    assert d["slo"]["targets"]["ttft_s"] == 0.15 and "timelines" not in d


class Linear:
    """A step takes 0.1 s plus 0.01 s per prefill token."""

    def step_time(self, shape: StepShape) -> float:
        return 0.1 + 0.01 * shape.num_prefill_tokens


def test_slo_percentiles_are_over_requests_for_ttft_and_over_every_gap_for_tbt():
    # By hand: A's 4-token prompt takes 0.14 s; one decode (0.24); then B (arrived at 0.2) prefills
    # 10 tokens beside A's decode, a 0.2 s step (0.44), in which B's only token comes; A's last
    # decode ends at 0.54. TTFTs 0.14 and 0.24; A's gaps 0.1, 0.2, 0.1; B has none.
    requests = [WorkloadRequest(0.0, 4, 4), WorkloadRequest(0.2, 10, 1)]
    slo = SloTargets(ttft_s=0.2, tbt_s=0.15, ttft_percentile=50, tbt_percentile=80)
    r = simulate(requests, SchedulerConfig(name="sarathi", block_size=16), FixedBudget(512), Linear(),
                 num_kv_blocks=100, slo=slo)
    assert [t.ttft for t in r.timelines] == pytest.approx([0.14, 0.24])
    assert r.slo.ttft_p_s == pytest.approx(0.19) and r.slo.ttft_met  # the median of two requests
    assert r.slo.ttft_attainment == 0.5  # yet B alone misses 0.2 s
    # Over the three gaps 0.1, 0.1, 0.2 (linear interpolation): P80 = 0.16 > 0.15.
    assert r.slo.tbt_p_s == pytest.approx(0.16) and r.slo.tbt_met is False
    assert r.slo.tbt_gap_attainment == pytest.approx(2 / 3)
    assert r.slo.tbt_attainment == 0.5  # per request: A's own P80 gap misses, B has no gap
    assert r.slo.percentiles_met is False


def test_check_percentile_counts_missing_samples_as_misses():
    ok = check_percentile(np.array([0.1, 0.2, 0.3, 0.4]), 0.35, 50)
    assert ok.observed_s == pytest.approx(0.25) and ok.met and ok.within == 0.75
    tail = check_percentile(np.array([0.1, math.inf, math.inf]), 1.0, 99)
    assert tail.observed_s == math.inf and not tail.met and tail.within == pytest.approx(1 / 3)
    empty = check_percentile(np.array([]), 1.0, 90)
    assert math.isnan(empty.observed_s) and empty.met and empty.within == 1.0


def test_an_empty_workload_reports_nan_latencies():
    r = run([])
    assert r.num_requests == r.num_steps == 0 and math.isnan(r.ttft.p50)


def test_a_request_longer_than_the_context_window_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="raise max_model_len or the KV blocks, or cap"):
        run([WorkloadRequest(0.0, 200, 100)], blocks=10)


def test_results_are_deterministic():
    requests = [WorkloadRequest(0.01 * i, 5 + 7 * i, 1 + i) for i in range(20)]
    a, b = run(requests, budget=16), run(requests, budget=16)
    assert [t.token_times for t in a.timelines] == [t.token_times for t in b.timelines]
