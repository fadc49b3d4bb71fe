"""An online latency model: learns this deployment's step time from every step, with a tail margin."""

from __future__ import annotations

import math
import operator
from collections import deque
from dataclasses import dataclass

from river import drift, linear_model, metrics, utils

from adaptive_sarathi.engine.estimator import Estimator
from adaptive_sarathi.controller.latency_features import (FEATURE_NAMES, FEATURE_NAMES_WITH_PRIOR, feature_values,
                                                          step_features)
from adaptive_sarathi.controller.rolling_quantile import RollingQuantile
from adaptive_sarathi.engine.latency.shape import LatencyModel, StepShape
from adaptive_sarathi.engine.stats import StepStats

_MIN_REFIT = 8  # steps a refit uses at least, even when the change looks more recent
_TYPICAL_RATE = 0.01  # of the running mean duration that keeps weighted rows near unit scale


@dataclass(frozen=True)
class LatencyModelError:
    """Online (predict-before-learn) error of the model so far. mape values are fractions."""

    num_predictions: int
    mae_s: float
    mape: float
    recent_mape: float  # over the last `error_window` predictions
    num_drifts: int  # regime changes detected (each one refit the model)


class OnlineLatencyModel(Estimator):
    """Step time = level x (prior(shape) + regression(features(shape))), learned one step at a time.

    - regression: river's BayesianLinearRegression (an exact online ridge fit, no learning rate to
      tune) of the part the prior does not explain, over `step_features`, weighted to minimise
      relative error;
    - level: an exponentially weighted mean of log(actual / predicted) with a half-life of
      `level_halflife` steps. A uniform slowdown (GPU clocks, another tenant) is tracked within a
      few half-lives without disturbing the fit;
    - drift: river's ADWIN watches the relative error; when it rises for good (a new model, a new
      GPU), the regression is rebuilt from those of the last `refit_window` steps that came after
      the change (located as the largest upward shift of their errors);
    - tail: the ratio actual / predicted over the last `tail_window` steps; predict_tail(shape, q)
      is the mean times the q-quantile of that ratio (`default_tail_ratio` until `min_tail_samples`
      ratios are held, or the largest seen ratio if larger).

    Without a prior nothing is known before the first steps: step_time() answers 0.0 and
    is_confident is False until `min_observations` steps were seen. With a prior, predictions are
    the prior's until steps arrive.
    """

    def __init__(self, prior: LatencyModel | None = None, tile_tokens: int = 128, knee_tokens: int = 256,
                 ridge: float = 1.0, level_halflife: float = 8.0, tail_window: int = 256,
                 min_tail_samples: int = 32, default_tail_ratio: float = 1.3, error_window: int = 32,
                 min_observations: int = 16, confident_mape: float = 0.25, drift_delta: float = 0.002,
                 refit_window: int = 32):
        for name in ("tile_tokens", "knee_tokens", "tail_window", "min_tail_samples", "error_window",
                     "min_observations", "refit_window"):
            if not isinstance(locals()[name], int) or locals()[name] < 1:
                raise ValueError(f"{name}={locals()[name]!r} is invalid: use an integer >= 1")
        if ridge <= 0 or level_halflife <= 0 or not 0 < drift_delta < 1:
            raise ValueError("ridge and level_halflife must be > 0 and drift_delta in (0, 1)")
        self.prior = prior
        self.tile_tokens = tile_tokens
        self.knee_tokens = knee_tokens
        self.ridge = ridge
        self.level_halflife = level_halflife
        self.tail_window = tail_window
        self.min_tail_samples = min_tail_samples
        self.default_tail_ratio = default_tail_ratio
        self.error_window = error_window
        self.min_observations = min_observations
        self.confident_mape = confident_mape
        self.drift_delta = drift_delta
        self.refit_window = refit_window

        self._level_rate = 1.0 - 0.5 ** (1.0 / level_halflife)
        self._regression = self._new_regression()
        self._log_level = 0.0
        self._level = 1.0  # exp(_log_level)
        self._ratios = RollingQuantile(tail_window)
        self._tail_cache: dict[float, float] = {}
        # clock=1: test for a change after every step, so detection is not delayed by up to 32 steps.
        self._drift = drift.ADWIN(delta=drift_delta, clock=1)
        # (features, duration ms, prior ms, relative error) of the last steps, to refit from.
        self._recent: deque[tuple[dict[str, float], float, float, float]] = deque(maxlen=refit_window)
        self._mae = metrics.MAE()
        self._mape = metrics.MAPE()
        self._recent_mape = utils.Rolling(metrics.MAPE, window_size=error_window)
        self._recent_error = 0.0
        self.num_observations = 0
        self.num_predictions = 0
        self.num_fitted = 0  # steps the current regression was fitted on (reset by drift)
        self._typical_ms = 0.0
        self.num_drifts = 0
        self._feature_names = FEATURE_NAMES if prior is None else FEATURE_NAMES_WITH_PRIOR
        self._weights: tuple[float, ...] = ()  # the regression's, read after each step's fit

    def _new_regression(self) -> linear_model.BayesianLinearRegression:
        # Ridge strength through beta (posterior mean = (I / (alpha beta) + X'X)^-1 X'y): river
        # starts the covariance at I / alpha instead of alpha I, consistent only for alpha = 1.
        return linear_model.BayesianLinearRegression(alpha=1.0, beta=1.0 / self.ridge)

    # -- prediction ---------------------------------------------------------------------------

    def _prior_ms(self, shape: StepShape) -> float | None:
        return self.prior.step_time(shape) * 1e3 if self.prior is not None else None

    def _base_ms(self, shape: StepShape, prior_ms: float | None) -> float:
        """Level-free prediction in milliseconds (may be <= 0 early in the fit)."""
        base = prior_ms or 0.0
        if not self.num_fitted:
            return base
        x = feature_values(shape, self.tile_tokens, self.knee_tokens, prior_ms)
        return base + sum(map(operator.mul, self._weights, x))

    def _predict_ms(self, shape: StepShape) -> float:
        prior_ms = self._prior_ms(shape)
        return max(0.0, self._base_ms(shape, prior_ms)) * self._level

    def step_time(self, shape: StepShape) -> float:
        """Predicted mean seconds (>= 0) of a step of `shape`; 0.0 before any step without a prior."""
        return self._predict_ms(shape) * 1e-3

    def tail_ratio(self, q: float) -> float:
        """The factor predict_tail applies to the mean for quantile q (cached until the next step)."""
        ratio = self._tail_cache.get(q)
        if ratio is None:
            if len(self._ratios) >= self.min_tail_samples:
                ratio = self._ratios.quantile(q)
            else:
                ratio = max(self.default_tail_ratio, self._ratios.max() if len(self._ratios) else 0.0)
            self._tail_cache[q] = ratio
        return ratio

    def predict_tail(self, shape: StepShape, q: float = 0.99) -> float:
        """Predicted q-quantile of the seconds a step of `shape` takes."""
        return self._predict_ms(shape) * 1e-3 * self.tail_ratio(q)

    @property
    def _established(self) -> bool:
        return self.prior is not None or self.num_fitted >= self.min_observations

    @property
    def is_confident(self) -> bool:
        """Whether predictions can be acted on: a prior or `min_observations` steps since the last
        refit, and a recent error within `confident_mape`."""
        return self._established and self._recent_error <= self.confident_mape

    def error(self) -> LatencyModelError:
        """The online error so far (zeros before the first prediction)."""
        return LatencyModelError(self.num_predictions, self._mae.get(), self._mape.get() / 100.0,
                                 self._recent_error, self.num_drifts)

    # -- learning -----------------------------------------------------------------------------

    def observe(self, stats: StepStats) -> None:
        """learn_one() from a finished engine step (stats is not mutated): its period, the host
        time since the previous step included when known, since that is what a token gap costs
        (and what a profile fitted from a step log predicts)."""
        self.learn_one(stats.shape, stats.duration_s + (stats.host_gap_s or 0.0))

    def learn_one(self, shape: StepShape, duration_s: float) -> None:
        """Score the prediction for `shape` against `duration_s` (the online error), then learn
        from it. Non-positive or non-finite durations are ignored."""
        if not (duration_s > 0 and math.isfinite(duration_s)):
            return
        prior_ms = self._prior_ms(shape)
        x = step_features(shape, self.tile_tokens, self.knee_tokens, prior_ms)
        y_ms = duration_s * 1e3
        stale, error = False, 0.0
        if self.num_fitted or self.prior is not None:
            base_ms = self._base_ms(shape, prior_ms)
            pred_ms = max(0.0, base_ms) * self._level
            error = abs(y_ms - pred_ms) / y_ms
            stale = self._score(y_ms, pred_ms, error)
            if base_ms > 0 and self._established:
                self._ratios.update(y_ms / pred_ms)
                self._log_level += self._level_rate * (math.log(y_ms / base_ms) - self._log_level)
                self._level = math.exp(self._log_level)
        self._tail_cache.clear()
        self.num_observations += 1
        self._recent.append((x, y_ms, prior_ms or 0.0, error))
        if stale:
            self._refit()
        else:
            self._fit(x, y_ms, prior_ms or 0.0)
        self._read_weights()

    def _read_weights(self) -> None:
        # The regression is linear without intercept, so its weight of a feature is its prediction
        # for that feature alone. Read once per step, here, off the decision's path: a decision then
        # predicts each candidate step with a plain dot product.
        if self.num_fitted:
            self._weights = tuple(self._regression.predict_one({name: 1.0}) for name in self._feature_names)

    def _score(self, y_ms: float, pred_ms: float, error: float) -> bool:
        """Record the online error (`error` = |y - pred| / y); True when ADWIN finds that it rose
        for good."""
        self.num_predictions += 1
        self._mae.update(y_ms * 1e-3, pred_ms * 1e-3)
        self._mape.update(y_ms, pred_ms)
        self._recent_mape.update(y_ms, pred_ms)
        self._recent_error = self._recent_mape.get() / 100.0  # read on every decision: keep it at hand
        before = self._drift.estimation
        self._drift.update(error)
        # ADWIN flags a change in either direction; only a rise in error means the fit went stale.
        return self._drift.drift_detected and self._drift.estimation > before

    def _fit(self, x: dict[str, float], y_ms: float, prior_ms: float) -> None:
        # The raw target, not one divided by the level: a regression chasing the level's units and
        # a level chasing the regression's would drift together without bound.
        # Each row is divided by y / typical y: least squares on relative error, so 10 ms decode
        # steps are fitted as closely as 200 ms prefill steps (the tail is a ratio too).
        if not self._typical_ms:
            self._typical_ms = y_ms
        self._typical_ms += _TYPICAL_RATE * (y_ms - self._typical_ms)
        w = self._typical_ms / y_ms
        self._regression.learn_one({k: v * w for k, v in x.items()}, (y_ms - prior_ms) * w)
        self.num_fitted += 1

    def _refit(self) -> None:
        """Rebuild the regression from the recent steps that came after the change."""
        self.num_drifts += 1
        self._regression = self._new_regression()
        self._log_level = 0.0
        self._level = 1.0
        self._ratios.clear()
        self.num_fitted = 0
        recent = list(self._recent)
        for x, y_ms, prior_ms, _ in recent[_change_point([entry[3] for entry in recent]):]:
            self._fit(x, y_ms, prior_ms)


def _change_point(errors: list[float]) -> int:
    """The index where the mean of `errors` shifts up the most (the least-squares split of a mean
    shift), leaving at least _MIN_REFIT values after it."""
    n = len(errors)
    if n <= _MIN_REFIT:
        return 0
    total = sum(errors)
    best, best_k, head = -math.inf, n - _MIN_REFIT, 0.0
    for k in range(1, n - _MIN_REFIT + 1):
        head += errors[k - 1]
        shift = (total - head) / (n - k) - head / k
        score = shift * math.sqrt(k * (n - k) / n)
        if score > best:
            best, best_k = score, k
    return best_k
