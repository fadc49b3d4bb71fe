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


def test_each_request_is_judged_by_its_class_targets():
    # Request 0 (interactive): TTFT 0.1 s; request 1 (batch) queues behind it: TTFT 0.3 s. Gaps 0.1 s.
    requests = [WorkloadRequest(0.0, 8, 3, "interactive"), WorkloadRequest(0.0, 8, 3, "batch")]
    classes = {"interactive": SloTargets(ttft_s=0.15, tbt_s=0.15), "batch": SloTargets(ttft_s=0.5, tbt_s=0.15)}
    r = run(requests, budget=8, chunk=8, slo=SloTargets(ttft_s=0.15, tbt_s=0.15, classes=classes))
    assert [t.ttft for t in r.timelines] == pytest.approx([0.1, 0.3])
    interactive, batch = r.slo.per_class["interactive"], r.slo.per_class["batch"]
    assert (interactive.num_requests, batch.num_requests) == (1, 1)
    assert interactive.ttft_p_s == pytest.approx(0.1) and batch.ttft_p_s == pytest.approx(0.3)
    assert interactive.percentiles_met and batch.percentiles_met and batch.targets == classes["batch"]
    # Every class meets its own targets, so the run does, though the top-level 0.15 s misses request 1.
    assert r.slo.percentiles_met and r.slo.attainment == 1.0 and r.slo.ttft_attainment == 1.0
    assert r.slo.ttft_met is False and r.slo.goodput_rps == pytest.approx(2 / r.makespan_s)
    assert batch.goodput_rps == pytest.approx(1 / r.makespan_s)
    # A class that misses its target fails the run.
    strict = {**classes, "batch": SloTargets(ttft_s=0.2, tbt_s=0.15)}
    r = run(requests, budget=8, chunk=8, slo=SloTargets(ttft_s=1.0, tbt_s=0.15, classes=strict))
    assert r.slo.ttft_met is True and not r.slo.per_class["batch"].ttft_met and not r.slo.percentiles_met
    assert r.slo.attainment == 0.5 and r.slo.per_class["interactive"].attainment == 1.0
    assert r.to_dict()["slo"]["per_class"]["batch"]["ttft_met"] is False


def test_requests_without_a_class_form_their_own_group_beside_the_classes():
    requests = [WorkloadRequest(0.0, 8, 3), WorkloadRequest(0.0, 8, 3, "batch")]
    slo = SloTargets(ttft_s=0.15, tbt_s=0.15, classes={"batch": SloTargets(ttft_s=0.2, tbt_s=0.05)})
    r = run(requests, budget=8, chunk=8, slo=slo)
    from adaptive_sarathi.engine.simulator import UNCLASSED

    assert set(r.slo.per_class) == {UNCLASSED, "batch"}
    assert r.slo.per_class[UNCLASSED].percentiles_met and r.slo.per_class[UNCLASSED].targets.ttft_s == 0.15
    assert not r.slo.per_class["batch"].tbt_met  # 0.1 s gaps over its 0.05 s target
    assert r.slo.tbt_gap_attainment == 0.5  # request 0's two gaps within 0.15 s, request 1's two over 0.05 s
    assert not r.slo.percentiles_met


def test_a_single_class_workload_gives_exactly_the_unclassed_numbers():
    requests = [WorkloadRequest(0.02 * i, 30 + 11 * i, 2 + i % 5) for i in range(30)]
    top = SloTargets(ttft_s=0.4, tbt_s=0.12, ttft_percentile=90, tbt_percentile=99)
    plain = run(requests, budget=64, seconds=0.05, slo=top).slo
    assert 0 < plain.attainment < 1 and plain.per_class == {}
    # Classes declared but unused change nothing.
    declared = SloTargets(0.4, 0.12, 90, 99, classes={"chat": SloTargets(0.4, 0.12, 90, 99),
                                                      "batch": SloTargets(9.0, 1.0)})
    unused = run(requests, budget=64, seconds=0.05, slo=declared).slo
    assert {k: v for k, v in vars(unused).items() if k != "targets"} == \
           {k: v for k, v in vars(plain).items() if k != "targets"}
    # Every request of one class with the same targets: the same figures, overall and for the class.
    classed = run([WorkloadRequest(r.arrival_time_s, r.num_prompt_tokens, r.num_output_tokens, "chat")
                   for r in requests], budget=64, seconds=0.05, slo=declared).slo
    same = ("attainment", "ttft_attainment", "tbt_attainment", "goodput_rps", "percentiles_met", "ttft_p_s",
            "tbt_p_s", "ttft_met", "tbt_met", "tbt_gap_attainment", "num_requests")
    assert {k: getattr(classed, k) for k in same} == {k: getattr(plain, k) for k in same}
    assert {k: getattr(classed.per_class["chat"], k) for k in same} == {k: getattr(plain, k) for k in same}


def test_a_class_without_targets_is_refused_before_the_run():
    slo = SloTargets(ttft_s=1.0, tbt_s=0.1, classes={"interactive": SloTargets(ttft_s=0.5, tbt_s=0.1)})
    with pytest.raises(ValueError, match=r"request class 'batch' has no SLO targets \(classes with targets: "
                                         r"interactive\): use an SLO policy that declares"):
        run([WorkloadRequest(0.0, 8, 2, "batch")], slo=slo)
    assert run([WorkloadRequest(0.0, 8, 2, "batch")]).slo is None  # no SLO: the class is only carried
    with pytest.raises(ValueError, match="without classes of its own"):
        SloTargets(ttft_s=1.0, classes={"a": SloTargets(ttft_s=1.0, classes={"b": SloTargets(ttft_s=1.0)})})


def test_the_engine_request_carries_the_workload_class(monkeypatch):
    from adaptive_sarathi.engine.engine import LLMEngine

    seen = {}
    add = LLMEngine.add_request

    def recording(self, *args, **kwargs):
        rid = add(self, *args, **kwargs)
        seen[rid] = self.scheduler.get_request(rid).slo_class
        return rid

    monkeypatch.setattr(LLMEngine, "add_request", recording)
    run([WorkloadRequest(0.0, 8, 2, "batch"), WorkloadRequest(0.1, 8, 2)])
    assert seen == {"0": "batch", "1": None}


class OneAtATime(FixedBudget):
    """Admits a request only while no other is queued or running."""

    def admits(self, state, num_prompt_tokens, slo_class=None):
        return state.num_running + state.num_waiting == 0


def test_admission_refuses_on_arrival_and_counts_the_refused_as_misses():
    # Request 0 runs 0..0.3 s; request 1 arrives at 0.05 s (offered at the step end, 0.1 s) and is
    # refused; request 2 arrives after request 0 finished and is served.
    requests = [WorkloadRequest(0.0, 8, 3, "interactive"), WorkloadRequest(0.05, 8, 3, "batch"),
                WorkloadRequest(0.5, 8, 3, "interactive")]
    classes = {"interactive": SloTargets(ttft_s=1.0), "batch": SloTargets(ttft_s=1.0)}
    slo = SloTargets(ttft_s=1.0, classes=classes)
    r = simulate(requests, SchedulerConfig(name="sarathi", block_size=16), OneAtATime(8, 8), Constant(0.1),
                 num_kv_blocks=100, slo=slo, admission=True, record_schedule=True)
    assert (r.num_requests, r.num_refused) == (2, 1)
    assert [t.arrival_time for t in r.timelines] == [0.0, 0.5]
    assert "1" not in set().union(*r.schedule)
    assert r.slo.num_requests == 3 and r.slo.num_refused == 1 and r.slo.attainment == pytest.approx(2 / 3)
    batch, interactive = r.slo.per_class["batch"], r.slo.per_class["interactive"]
    assert (batch.num_refused, batch.attainment, batch.ttft_p_s) == (1, 0.0, math.inf)
    assert (interactive.num_refused, interactive.attainment) == (0, 1.0)
    # Without admission every request is queued and served.
    r = simulate(requests, SchedulerConfig(name="sarathi", block_size=16), OneAtATime(8, 8), Constant(0.1),
                 num_kv_blocks=100, slo=slo)
    assert (r.num_requests, r.num_refused, r.slo.attainment) == (3, 0, 1.0)


def test_admission_jumps_the_clock_over_idle_time_between_arrivals():
    r = simulate([WorkloadRequest(2.0, 8, 2), WorkloadRequest(7.0, 8, 2)], SchedulerConfig(name="sarathi"),
                 FixedBudget(8), Constant(0.1), num_kv_blocks=100, admission=True)
    assert [t.first_scheduled_time for t in r.timelines] == [2.0, 7.0] and r.num_refused == 0
