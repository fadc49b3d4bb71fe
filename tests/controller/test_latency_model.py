"""The online latency model: accuracy, regime changes within a bound, a calibrated tail, its error."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from adaptive_sarathi.controller.latency_model import OnlineLatencyModel
from adaptive_sarathi.controller.synthetic import ToyLatency
from adaptive_sarathi.engine.latency.shape import StepShape

NOISE = 0.05  # sigma of the lognormal noise on every duration


def random_shape(rng: random.Random) -> StepShape:
    decodes = rng.randint(0, 256)
    prefill = rng.choice([0, rng.randint(1, 2048)])
    seqs = rng.randint(1, 4) if prefill else 0
    return StepShape(prefill, decodes, seqs, decodes * rng.randint(100, 4000) + prefill)


def feed(model: OnlineLatencyModel, truth, rng: random.Random, steps: int) -> list[float]:
    """Learn `steps` noisy steps; returns |predicted mean / true mean - 1| before each one."""
    errors = []
    for _ in range(steps):
        shape = random_shape(rng)
        true_s = truth.step_time(shape)
        errors.append(abs(model.step_time(shape) / true_s - 1))
        model.learn_one(shape, true_s * math.exp(rng.gauss(0.0, NOISE)))
    return errors


def steps_to_track(errors: list[float], tolerance: float, window: int = 20) -> int:
    """First step from which the mean error over `window` steps stays below `tolerance`."""
    for k in range(len(errors) - window):
        if all(sum(errors[j:j + window]) / window < tolerance for j in range(k, len(errors) - window)):
            return k
    return len(errors)


def test_learns_linear_plus_tile_step_function():
    rng = random.Random(0)
    model = OnlineLatencyModel()
    feed(model, ToyLatency(), rng, 2000)
    errors = [abs(model.step_time(s) / ToyLatency().step_time(s) - 1) for s in (random_shape(rng) for _ in range(500))]
    assert sum(errors) / len(errors) < 0.02  # mean error 2% of the true mean, under 5% noise
    assert max(errors) < 0.15
    # The tile step: 129 tokens start a second 128-token tile, 128 do not.
    base = dict(num_decode_tokens=0, num_prefill_seqs=1)
    jump = model.step_time(StepShape(129, sum_context_tokens=129, **base)) - model.step_time(
        StepShape(128, sum_context_tokens=128, **base))
    assert jump == pytest.approx(ToyLatency().tile_ms * 1e-3, rel=0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uniform_slowdown_is_tracked_within_40_steps(seed: int):
    rng = random.Random(seed)
    model = OnlineLatencyModel()
    feed(model, ToyLatency(), rng, 1000)
    errors = feed(model, ToyLatency(scale=1.5), rng, 300)
    assert errors[0] > 0.3  # the change is real: predictions were a third too low
    assert steps_to_track(errors, 0.05) <= 40


@pytest.mark.parametrize("seed", [0, 1])
def test_structural_change_is_detected_and_refit_within_150_steps(seed: int):
    rng = random.Random(seed)
    model = OnlineLatencyModel()
    feed(model, ToyLatency(), rng, 1000)
    other = ToyLatency(base_ms=3.0, tile_ms=9.0, context_ms_per_1k=0.01)  # a different model and GPU
    errors = feed(model, other, rng, 600)
    assert model.num_drifts >= 1
    assert steps_to_track(errors, 0.08) <= 150


@pytest.mark.parametrize("q,low,high", [(0.99, 0.975, 1.0), (0.9, 0.86, 0.94)])
def test_tail_covers_its_quantile_of_noisy_steps(q: float, low: float, high: float):
    rng = random.Random(4)
    model = OnlineLatencyModel()
    feed(model, ToyLatency(), rng, 1500)
    covered, n = 0, 4000
    for _ in range(n):
        shape = random_shape(rng)
        covered += ToyLatency().step_time(shape) * math.exp(rng.gauss(0.0, NOISE)) <= model.predict_tail(shape, q)
    assert low <= covered / n <= high


def test_online_error_is_reported():
    model = OnlineLatencyModel()
    assert model.error().num_predictions == 0 and model.error().mape == 0.0
    feed(model, ToyLatency(), random.Random(5), 1000)
    err = model.error()
    assert err.num_predictions == 999  # every step but the first was predicted before it was learned
    assert 0.03 < err.recent_mape < 0.07  # the noise floor: E|lognormal(0.05) - 1| ~ 4%
    assert err.mape < 0.08 and 0 < err.mae_s < 0.01 and err.num_drifts == 0


def test_before_any_step_without_a_prior_it_is_unsure():
    model = OnlineLatencyModel(min_observations=16)
    shape = StepShape(512, 16, 1, 20000)
    assert model.step_time(shape) == 0.0 and not model.is_confident
    rng = random.Random(6)
    feed(model, ToyLatency(), rng, 15)
    assert not model.is_confident
    feed(model, ToyLatency(), rng, 40)
    assert model.is_confident


def test_a_prior_answers_first_and_its_error_is_learned():
    shape = StepShape(512, 16, 1, 20000)
    wrong_prior = ToyLatency(scale=2.0)
    model = OnlineLatencyModel(prior=wrong_prior)
    assert model.step_time(shape) == wrong_prior.step_time(shape) and model.is_confident
    errors = feed(model, ToyLatency(), random.Random(7), 300)
    assert steps_to_track(errors, 0.05) <= 40


def test_clone_is_unfitted_and_pickle_keeps_the_fit():
    model = OnlineLatencyModel(level_halflife=4.0)
    feed(model, ToyLatency(), random.Random(8), 200)
    shape = StepShape(256, 32, 1, 40000)
    assert pickle.loads(pickle.dumps(model)).predict_tail(shape) == model.predict_tail(shape)
    clone = model.clone()
    assert repr(clone) == repr(model) and clone.num_observations == 0 and clone.step_time(shape) == 0.0


def test_rejects_bad_hyperparameters_and_ignores_bad_durations():
    with pytest.raises(ValueError, match="tail_window"):
        OnlineLatencyModel(tail_window=0)
    model = OnlineLatencyModel()
    for bad in (0.0, -1.0, math.nan, math.inf):
        model.learn_one(StepShape(1, 0, 1, 1), bad)
    assert model.num_observations == 0
