"""Profiles fitted from step logs: the fit error report, the token-knots form, and the simulator
over a period profile."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from step_log_cases import TRUTH, Alternating, run_engine

from adaptive_sarathi.engine.batch import StepResult
from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.executor import Executor
from adaptive_sarathi.engine.latency import ProfileLatencyModel, ProfileRow, StepShape, load_profile, save_profile
from adaptive_sarathi.engine.latency.fit_error import fit_error
from adaptive_sarathi.engine.latency.from_step_log import fit_step_log
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.engine.simulator import VirtualClock, drive, simulate
from adaptive_sarathi.engine.step_log import StepLog, StepRecord
from adaptive_sarathi.workloads import WorkloadRequest


class Table:
    """step_time from a dict of shapes; what fit_error sees of a model."""

    def __init__(self, times: dict[StepShape, float]):
        self.times = times

    def step_time(self, shape: StepShape) -> float:
        return self.times[shape]


def test_fit_error_is_median_and_p90_of_the_ratio_error_per_kind_of_step():
    decodes = [StepShape(0, n, 0, 100 * n) for n in range(1, 6)]
    mixed = [StepShape(64, 2, 1, 300), StepShape(32, 0, 1, 32)]
    predicted = {s: 0.01 for s in decodes + mixed}
    # Observed/predicted - 1 of the decodes: -0.2, -0.1, 0, +0.1, +0.3 -> |.| sorted 0, .1, .1, .2, .3
    observed = [0.008, 0.009, 0.010, 0.011, 0.013] + [0.015, 0.0]
    rows = [ProfileRow(s, t) for s, t in zip(decodes + mixed, observed)]
    error = fit_error(Table(predicted), rows)
    assert error.decode.count == 5 and error.decode.median == pytest.approx(0.1)
    assert error.decode.p90 == pytest.approx(0.2 + 0.6 * 0.1)  # linear between the 4th and 5th of 5
    assert error.mixed.count == 2 and error.mixed.median == pytest.approx(0.75)
    assert error.mixed.p90 == pytest.approx(0.5 + 0.9 * 0.5)
    assert "decode-only median 0.100 p90 0.260 (n=5)" in str(error)
    # A step the model calls free that took time is an infinite error, not a crash.
    assert fit_error(Table({decodes[0]: 0.0}), [ProfileRow(decodes[0], 0.01)]).decode.median == math.inf
    assert fit_error(Table({}), []).mixed.count == 0 and math.isnan(fit_error(Table({}), []).mixed.median)


def random_shape(rng: random.Random) -> StepShape:
    """A served-looking step: decodes at mixed contexts, and maybe a chunk after a cached prefix."""
    decodes = rng.randint(0, 64)
    decode_context = sum(rng.randint(16, 4000) for _ in range(decodes))
    if decodes and rng.random() < 0.6:
        return StepShape(0, decodes, 0, decode_context, decode_context)
    chunk = rng.randint(1, 512 - decodes)
    prefix = rng.choice([0, 0, rng.randint(1, 6000)])
    return StepShape(chunk, decodes, 1, decode_context + prefix + chunk, decode_context)


def test_token_knots_recover_a_linear_truth_off_the_fitted_steps():
    rng = random.Random(1)
    rows = tuple(ProfileRow(s, TRUTH.step_time(s)) for s in (random_shape(rng) for _ in range(400)))
    model = ProfileLatencyModel(rows, {"form": "token-knots"})
    assert min(model.coefficients) >= 0
    for shape in (random_shape(rng) for _ in range(200)):
        assert model.step_time(shape) == pytest.approx(TRUTH.step_time(shape), rel=1e-6)


class PerSequenceTruth(Executor):
    """A step costs by its sequences, as on a GPU: matmuls by tokens padded to a 128-token tile,
    KV reads by every sequence's context, each chunk's attention by chunk x (prefix + chunk / 2),
    whichever of memory and compute is larger. No StepShape holds all of that."""

    vocab_size = 1 << 20  # prompts carry a distinct first token (served_log)

    def __init__(self, clock: VirtualClock, num_kv_blocks: int):
        self.clock, self.num_kv_blocks, self.block_size = clock, num_kv_blocks, 16

    def execute(self, batch) -> StepResult:
        tokens = sum(len(c.token_ids) for c in batch.chunks)
        padded = -(-tokens // 128) * 128
        context = sum(c.start_position + len(c.token_ids) for c in batch.chunks)
        pairs = sum(len(c.token_ids) * (c.start_position + len(c.token_ids) / 2) for c in batch.chunks if c.is_prefill)
        seconds = max(0.006 + 4e-8 * context, 4e-5 * padded + 4e-9 * pairs) + 1e-3 + 3e-6 * len(batch.chunks)
        self.clock.advance(seconds)
        return StepResult({c.request_id: 0 for c in batch.chunks if c.sample}, seconds)


def served_log(seed: int, num_requests: int = 120) -> StepLog:
    """The step log of a served run over PerSequenceTruth: prompts up to 3000 tokens, budget 256."""
    rng = random.Random(seed)
    clock = VirtualClock()
    scheduler = make_scheduler(SchedulerConfig(name="sarathi", block_size=16, max_model_len=4096), 8000)
    engine = LLMEngine(scheduler, PerSequenceTruth(clock, 8000), FixedBudget(256), None, scheduler.max_context_len,
                       (), clock=clock.now)
    steps = []
    engine.stats_listeners.append(steps.append)
    arrivals = sorted(rng.uniform(0, 30) for _ in range(num_requests))
    for i, t in enumerate(arrivals):
        # A first token of its own: prompts sharing nothing, so prefix caching leaves every chunk to compute.
        engine.add_request([i + 1] + [0] * rng.randint(19, 2999), SamplingParams(max_tokens=rng.randint(5, 80), ignore_eos=True),
                           request_id=str(i), arrival_time=t)
    drive(engine, clock, arrivals)
    records = [StepRecord.from_stats(s, s.duration_s) for s in steps]  # no host work: period = executor time
    return StepLog({"gpu": "synthetic"}, tuple(records))


def test_token_knots_fit_served_steps_better_than_prefill_knots():
    train, test = fit_step_log(served_log(1), form="token-knots"), served_log(2)
    other = [ProfileRow(r.shape, r.duration_s) for r in test.records]
    old = fit_step_log(served_log(1), form="prefill-knots")
    new_error, old_error = fit_error(train.model, other), fit_error(old.model, other)
    assert new_error.mixed.count > 100 and new_error.decode.count > 100
    assert new_error.mixed.median < 0.01 and new_error.mixed.p90 < 0.03
    assert new_error.decode.median < 0.005
    # The prefill-knots form misprices mixed steps: decodes priced apart from the chunk's matmul
    # tokens, and context priced alike whether decodes read it or a chunk attends it.
    assert new_error.mixed.median < 0.3 * old_error.mixed.median


def test_a_period_profile_makes_the_simulator_count_host_time_once():
    # A run whose steps cost TRUTH on the executor plus 3 ms of host work after each: the profile
    # fitted on periods, simulated, must give the run's token gaps (not executor + 2 x host).
    host_s = 0.003
    steps = run_engine([0.0, 0.001, 0.002], host_s=host_s, prompt=100, outputs=30)
    records = [StepRecord.from_stats(s, n.start_time_s - s.start_time_s) for s, n in zip(steps, steps[1:])]
    fit = fit_step_log(StepLog({}, tuple(records)), duration="period")
    assert fit.error.decode.median < 1e-6
    workload = [WorkloadRequest(t, 100, 30) for t in (0.0, 0.001, 0.002)]
    sim = simulate(workload, SchedulerConfig(name="sarathi", block_size=16), Alternating(), fit.model,
                   num_kv_blocks=200, record_steps=True)
    assert [s.shape for s in sim.steps][:len(records)] == [s.shape for s in steps][:len(records)]
    sim_gaps = np.concatenate([np.diff(t.token_times) for t in sim.timelines])
    assert np.median(sim_gaps) == pytest.approx(np.median([r.duration_s for r in records]) + host_s, rel=0.05)
    # Each simulated step lasts its period: the fitted duration, no host time on top.
    assert all(s.host_gap_s in (0.0, None) for s in sim.steps)
    for s, r in zip(sim.steps, records):
        assert s.duration_s == pytest.approx(r.period_s, rel=1e-6)


def test_executor_fit_leaves_host_time_out_and_period_fit_needs_periods():
    steps = run_engine([0.0], host_s=0.003)
    records = tuple(StepRecord.from_stats(s, None) for s in steps)
    with pytest.raises(ValueError, match="0 steps with a period to fit"):
        fit_step_log(StepLog({}, records))
    fit = fit_step_log(StepLog({}, records), duration="executor", holdout_fraction=0.0)
    assert fit.holdout_error is None and fit.num_without_period == 0
    for s in steps:
        assert fit.model.step_time(s.shape) == pytest.approx(s.duration_s, rel=1e-6)
    with pytest.raises(ValueError, match="duration='wall' is unknown: use one of period, executor"):
        fit_step_log(StepLog({}, records), duration="wall")


def test_token_knots_keep_coefficients_nonnegative_on_noisy_steps():
    rng = random.Random(3)
    shapes = [random_shape(rng) for _ in range(300)]
    # Noise far above the context terms: an unconstrained fit gives some of them negative weights.
    rows = tuple(ProfileRow(s, TRUTH.step_time(s) * (1 + 0.3 * rng.uniform(-1, 1))) for s in shapes)
    model = ProfileLatencyModel(rows, {"form": "token-knots"})
    assert min(model.coefficients) >= 0.0
    assert all(model.step_time(StepShape(0, 64, 0, 64 * c, 64 * c)) > 0 for c in (10, 1000, 100_000))


def test_token_knots_price_decode_only_steps_on_their_own_curve_and_extrapolate_by_its_trend():
    # Decode-only steps: 5 ms up to 8 decodes, then a step to 6 ms at 9 (a larger CUDA graph).
    # Steps with a chunk are far dearer at the same token counts (another kernel path).
    decode_times = {n: 0.005 + (0.001 if n >= 9 else 0.0) for n in (1, 2, 4, 8, 9)}
    rows = [ProfileRow(StepShape(0, n, 0, 100 * n, 100 * n), t) for n, t in decode_times.items()]
    rows += [ProfileRow(StepShape(p, 0, 1, p, 0), 0.02 + 1e-5 * p) for p in (6, 64, 256, 512)]
    model = ProfileLatencyModel(tuple(rows), {"form": "token-knots"})
    assert model.decode_knots == (1, 2, 4, 8, 9) and model.knots == (6, 64, 256, 512)
    assert model.step_time(StepShape(0, 6, 0, 600, 600)) == pytest.approx(0.005, rel=1e-3)  # untouched by chunks
    # Past 9 decodes the curve's trend goes on (about 0.08 ms a decode), not the last segment's
    # 1 ms a decode, which would give 13 ms at 16.
    assert 0.006 < model.step_time(StepShape(0, 16, 0, 1600, 1600)) < 0.007


def test_profile_csv_keeps_decode_context_and_the_form(tmp_path):
    rows = [ProfileRow(StepShape(100, 4, 1, 4 * 300 + 900, 4 * 300), 0.02), ProfileRow(StepShape(0, 8, 0, 800), 0.01),
            ProfileRow(StepShape(200, 0, 1, 200), 0.015)]
    path = tmp_path / "p.csv"
    save_profile(path, rows, {"form": "token-knots", "source": "step-log x"})
    model = load_profile(path)
    assert [r.shape for r in model.rows] == [r.shape for r in rows] and model.form == "token-knots"
    # A file of the profiler's columns: decode_context_len (per decode) gives the decodes' context.
    path.write_text("num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s,"
                    "decode_context_len\n100,4,1,1300,0.02,300\n0,8,0,800,0.01,100\n")
    assert [r.shape.decode_context_tokens for r in load_profile(path).rows] == [1200, 800]
    assert load_profile(path).form == "prefill-knots"  # no form tag: the form older profiles were fitted in
    # No column at all: derived as for chunks without a cached prefix.
    path.write_text("num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s\n"
                    "100,4,1,1300,0.02\n0,8,0,800,0.01\n")
    assert [r.shape.decode_context_tokens for r in load_profile(path).rows] == [1200, 800]
    path.write_text("# form: splines\nnum_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,"
                    "duration_s\n100,4,1,1300,0.02\n0,8,0,800,0.01\n")
    with pytest.raises(ValueError, match="form='splines' is unknown: use one of prefill-knots, token-knots"):
        load_profile(path)
    path.write_text("num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s,"
                    "decode_context_tokens\n100,4,1,1300,0.02,1400\n0,8,0,800,0.01,800\n")
    with pytest.raises(ValueError, match="line 2: decode_context_tokens=1400 must lie between 0 and"):
        load_profile(path)


def test_fitting_stats_in_memory_matches_fitting_their_written_log(tmp_path):
    from adaptive_sarathi.engine.latency.from_step_log import fit_step_stats, step_rows
    from adaptive_sarathi.engine.step_log import StepLogWriter, read_step_log

    # Two bursts with idle time between them: the step before the idle spell has no period.
    path = tmp_path / "run.jsonl"
    with StepLogWriter(path, {"gpu": "synthetic"}) as writer:
        steps = run_engine([0.0, 0.001, 5.0], host_s=0.002, listeners=[writer], prompt=60, outputs=6)
    logged = fit_step_log(read_step_log(path), source="x")
    in_memory = fit_step_stats(steps, {"gpu": "synthetic"}, source="x")
    assert in_memory.rows == logged.rows and in_memory.num_without_period == logged.num_without_period == 2
    assert in_memory.model.tags["gpu"] == "synthetic" and in_memory.error == logged.error
    idle_before = [s for s, n in zip(steps, steps[1:]) if n.host_gap_s is None]
    assert len(idle_before) == 1
    periods = step_rows(read_step_log(path).records, "period")
    assert len(periods) == len(steps) - 2
    with pytest.raises(ValueError, match="duration='wall' is unknown"):
        step_rows(read_step_log(path).records, "wall")
