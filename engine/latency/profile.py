"""A measured latency profile: a CSV of step shapes and their seconds, interpolated.

File format (written by `save_profile`; the GPU profiler writes the same):

    # gpu: h100
    # model: llama-3-8b
    # dtype: bfloat16
    # torch: 2.5.1
    num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s,decode_context_tokens
    0,1,0,1024,0.0068,1024
    512,0,1,512,0.0151,0
    ...

Leading `# key: value` lines are tags (free-form provenance: GPU, model, dtype, versions), except
`form`, which picks the interpolation below. The five columns before decode_context_tokens are
required; decode_context_tokens (StepShape's field) is optional: without it a row takes it from
the profiler's decode_context_len column (x num_decode_tokens), else derives it as StepShape
does. Other columns are allowed and ignored.

Interpolation: duration = base(x) + sum of coefficient x feature, where base is piecewise-linear
between the profile's distinct values of x (so a step between grid points such as 512 -> 520
tokens is reproduced when the grid samples both) and extended beyond them (prefill-knots: with its
end segments' slopes); the knot values and the coefficients are fitted jointly by least squares
over all rows. Predictions
are clamped at 0. Two forms (FORMS):

- `prefill-knots` (the default, and what a file without a `form` tag gets): x = num_prefill_tokens;
  features num_decode_tokens, sum_context_tokens, num_prefill_seqs. Suited to a grid profile.
- `token-knots`: x = num_tokens, decodes and chunk tokens alike, since the step's matmuls cost by
  the tokens they multiply whatever their kind; features num_decode_tokens and num_prefill_seqs
  (what decode rows and chunks add beyond the matmuls: sampling, LM-head rows, per-sequence
  work), decode_context_tokens (the KV the decodes read), prefill_context_tokens and the chunks'
  attention pairs, estimated per chunk as chunk x (context - chunk / 2) from the means over the
  step's chunks (exact for one chunk). Decode-only steps get a base curve of their own (knots at
  their decode counts; of the features only decode_context_tokens applies to them), since they
  run other kernels (decode CUDA graphs) than steps with chunks; when the rows lack either kind,
  one curve serves both. Beyond a curve's ends it continues with the slope of the row-weighted
  least-squares line through its knots, not its end segment's, which may be a local step (a
  batch filling a new graph size or GEMM tile). The feature coefficients are kept >= 0 (no
  feature may make a step faster), which keeps a noisy log's fit from going below zero. Suited
  to served steps: many decodes at mixed contexts and chunks at any prefix depth, in one step;
  beyond the shapes a log covers, predictions are extrapolations.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from adaptive_sarathi.engine.latency.shape import StepShape

PROFILE_COLUMNS = ("num_prefill_tokens", "num_decode_tokens", "num_prefill_seqs", "sum_context_tokens",
                   "duration_s")
OPTIONAL_COLUMNS = ("decode_context_tokens",)
PREFILL_KNOTS = "prefill-knots"
TOKEN_KNOTS = "token-knots"
# The features each form fits a coefficient to, in order, after the knots.
FORMS: dict[str, tuple[str, ...]] = {
    PREFILL_KNOTS: ("num_decode_tokens", "sum_context_tokens", "num_prefill_seqs"),
    TOKEN_KNOTS: ("num_decode_tokens", "num_prefill_seqs", "decode_context_tokens", "prefill_context_tokens",
                  "prefill_attention_pairs"),
}


@dataclass(frozen=True)
class ProfileRow:
    shape: StepShape
    duration_s: float


@dataclass(frozen=True)
class ProfileLatencyModel:
    """Fitted from `rows` on construction, in the form `tags["form"]` names (PREFILL_KNOTS when
    absent); `tags` carries the file's provenance lines. Raises ValueError for fewer than 2 rows
    or an unknown form."""

    rows: tuple[ProfileRow, ...]
    tags: dict[str, str] = field(default_factory=dict, compare=False)
    form: str = field(init=False)
    # The base curve: of every step (prefill-knots), or of steps with a prefill chunk (token-knots).
    knots: tuple[float, ...] = field(init=False)
    knot_values: tuple[float, ...] = field(init=False)
    # token-knots: the base curve of decode-only steps; () when the rows lack either kind of step.
    decode_knots: tuple[float, ...] = field(init=False)
    decode_knot_values: tuple[float, ...] = field(init=False)
    # token-knots: slope (s/token) of each curve beyond its ends; None: the end segments' slopes.
    knot_slope: float | None = field(init=False)
    decode_knot_slope: float | None = field(init=False)
    coefficients: tuple[float, ...] = field(init=False)  # seconds per unit of FORMS[form], in order
    rms_error_s: float = field(init=False)  # root-mean-square residual of the fit over the rows

    def __post_init__(self) -> None:
        if len(self.rows) < 2:
            raise ValueError(f"a latency profile needs at least 2 rows, got {len(self.rows)}: profile more shapes")
        form = self.tags.get("form", PREFILL_KNOTS)
        if form not in FORMS:
            raise ValueError(f"form={form!r} is unknown: use one of {', '.join(FORMS)} (the profile's '# form:' tag)")
        shapes = [r.shape for r in self.rows]
        x, features = form_design(form, shapes)
        target = np.array([r.duration_s for r in self.rows])
        decode_only = np.array([s.num_prefill_seqs == 0 for s in shapes])
        # Decode-only steps get their own curve: they replay other kernels (decode graphs) than steps
        # with chunks, so their cost at a token count says little about a mixed step's at the same count.
        separate = form == TOKEN_KNOTS and decode_only.any() and not decode_only.all()
        if separate:
            features[decode_only, 0] = 0.0  # a decode-only step's decodes are its curve's x
            groups = [~decode_only, decode_only]
        else:
            groups = [np.ones(len(x), dtype=bool)]
        curves = [np.unique(x[g]) for g in groups]
        i, j, w0, w1 = (np.empty(len(x), dtype=np.int64), np.empty(len(x), dtype=np.int64),
                        np.empty(len(x)), np.empty(len(x)))
        offset = 0
        for g, knots in zip(groups, curves):
            gi, gj, gw0, gw1 = _hat_weights(knots, x[g])
            i[g], j[g], w0[g], w1[g] = gi + offset, gj + offset, gw0, gw1
            offset += len(knots)
        values, coefficients = _fit_hats(i, j, w0, w1, offset, features, target, nonnegative=form == TOKEN_KNOTS)
        residual = w0 * values[i] + w1 * values[j] + features @ coefficients - target
        split = len(curves[0])
        slopes = [None, None]
        if form == TOKEN_KNOTS:
            weight = np.bincount(i, w0, minlength=offset) + np.bincount(j, w1, minlength=offset)
            bounds = [(0, split), (split, offset)]
            slopes = [_trend_slope(curves[c], values[a:b], weight[a:b]) for c, (a, b) in enumerate(bounds[:len(curves)])]
            slopes += [None] * (2 - len(slopes))
        decode_curve = curves[1] if separate else np.empty(0)
        for name, value in dict(form=form, knots=tuple(curves[0].tolist()), knot_values=tuple(values[:split].tolist()),
                                decode_knots=tuple(decode_curve.tolist()),
                                decode_knot_values=tuple(values[split:].tolist()),
                                knot_slope=slopes[0], decode_knot_slope=slopes[1],
                                coefficients=tuple(coefficients.tolist()),
                                rms_error_s=float(np.sqrt(np.mean(residual ** 2)))).items():
            object.__setattr__(self, name, value)

    def step_time(self, shape: StepShape) -> float:
        # Scalar arithmetic: the simulator calls this every step.
        if self.form == PREFILL_KNOTS:
            a, b, c = self.coefficients
            t = (_interpolate(self.knots, self.knot_values, shape.num_prefill_tokens, None)
                 + a * shape.num_decode_tokens + b * shape.sum_context_tokens + c * shape.num_prefill_seqs)
            return t if t > 0.0 else 0.0
        p, s, d = shape.num_prefill_tokens, shape.num_prefill_seqs, shape.num_decode_tokens
        decode_context = shape.decode_context_tokens
        a, c, kd, kp, ka = self.coefficients
        if not s and self.decode_knots:
            t = _interpolate(self.decode_knots, self.decode_knot_values, d, self.decode_knot_slope) + kd * decode_context
        else:
            prefill_context = shape.sum_context_tokens - decode_context
            t = (_interpolate(self.knots, self.knot_values, p + d, self.knot_slope) + a * d + c * s
                 + kd * decode_context + kp * prefill_context
                 + (ka * (p * prefill_context - 0.5 * p * p) / s if s else 0.0))
        return t if t > 0.0 else 0.0


def form_design(form: str, shapes: Sequence[StepShape]) -> tuple[np.ndarray, np.ndarray]:
    """The knot variable [n] and the feature matrix [n, len(FORMS[form])] of `shapes` under
    `form` (fresh float arrays)."""
    p = np.array([s.num_prefill_tokens for s in shapes], dtype=float)
    d = np.array([s.num_decode_tokens for s in shapes], dtype=float)
    seqs = np.array([s.num_prefill_seqs for s in shapes], dtype=float)
    context = np.array([s.sum_context_tokens for s in shapes], dtype=float)
    if form == PREFILL_KNOTS:
        return p, np.column_stack([d, context, seqs])
    decode_context = np.array([s.decode_context_tokens for s in shapes], dtype=float)
    prefill_context = context - decode_context
    pairs = np.divide(p * prefill_context - 0.5 * p * p, seqs, out=np.zeros_like(p), where=seqs > 0)
    return p + d, np.column_stack([d, seqs, decode_context, prefill_context, pairs])


def _interpolate(knots: tuple[float, ...], values: tuple[float, ...], x: float, slope: float | None) -> float:
    """Piecewise-linear through (knots, values) at x; beyond the ends, linear with `slope` (None:
    the end segment's slope; one knot and no slope: flat)."""
    if slope is not None and (x < knots[0] or x > knots[-1]):
        end = 0 if x < knots[0] else len(knots) - 1
        return values[end] + slope * (x - knots[end])
    if len(knots) == 1:
        return values[0]
    i = min(max(bisect.bisect_right(knots, x) - 1, 0), len(knots) - 2)
    frac = (x - knots[i]) / (knots[i + 1] - knots[i])
    return values[i] * (1.0 - frac) + values[i + 1] * frac


def _trend_slope(knots: np.ndarray, values: np.ndarray, weight: np.ndarray) -> float:
    """The slope of the weighted least-squares line through (knots, values): how a curve goes on
    past the measured range. An end segment's slope would carry a local step (a batch that fills
    a new CUDA-graph size or GEMM tile) on for ever."""
    if len(knots) < 2:
        return 0.0
    mean_x = np.average(knots, weights=weight)
    spread = np.average((knots - mean_x) ** 2, weights=weight)
    return float(np.average((knots - mean_x) * (values - np.average(values, weights=weight)), weights=weight) / spread)


def _hat_weights(knots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per x: the indices i, j of the knots it lies between (or of the end segment it extends)
    and their weights (linear beyond the ends; one knot: i = j, weights 1 and 0)."""
    if len(knots) == 1:
        zero = np.zeros(len(x), dtype=np.int64)
        return zero, zero, np.ones(len(x)), np.zeros(len(x))
    i = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    frac = (x - knots[i]) / (knots[i + 1] - knots[i])
    return i, i + 1, 1.0 - frac, frac


def _fit_hats(i: np.ndarray, j: np.ndarray, w0: np.ndarray, w1: np.ndarray, k: int, features: np.ndarray,
              target: np.ndarray, nonnegative: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of target over [k hat columns (row r: w0[r] at i[r], w1[r] at j[r]) |
    features]: (knot values, coefficients). Through the normal equations, built from the two
    non-zeros a hat row has, so memory grows with k^2, not rows x k (a served log has many steps
    and knots).

    nonnegative: no feature may lower a step's time. The most negative coefficient is fixed at 0
    and the rest refitted until none is negative (a greedy stand-in for exact non-negative least
    squares, which it matches whenever one pass suffices)."""
    f = features.shape[1]
    # Columns scaled to unit RMS: features span 1 (a chunk) to 1e7 (attention pairs).
    scale = np.sqrt(np.mean(features ** 2, axis=0))
    scale[scale == 0] = 1.0
    z = features / scale
    gram = np.zeros((k + f, k + f))
    hat = gram[:k, :k]
    np.add.at(hat, (i, i), w0 * w0)
    np.add.at(hat, (i, j), w0 * w1)
    np.add.at(hat, (j, i), w0 * w1)
    np.add.at(hat, (j, j), w1 * w1)
    for col in range(f):
        cross = np.bincount(i, w0 * z[:, col], minlength=k) + np.bincount(j, w1 * z[:, col], minlength=k)
        gram[:k, k + col] = cross
        gram[k + col, :k] = cross
    gram[k:, k:] = z.T @ z
    rhs = np.concatenate([np.bincount(i, w0 * target, minlength=k) + np.bincount(j, w1 * target, minlength=k),
                          z.T @ target])
    active = list(range(k + f))
    while True:
        solution = np.zeros(k + f)
        solution[active] = np.linalg.lstsq(gram[np.ix_(active, active)], rhs[active], rcond=None)[0]
        worst = int(np.argmin(solution[k:])) + k
        if not nonnegative or solution[worst] >= 0:
            return solution[:k], solution[k:] / scale
        active.remove(worst)


def load_profile(path: Path | str) -> ProfileLatencyModel:
    """Read and fit a profile CSV. Raises ValueError naming the file, the line and the fix;
    FileNotFoundError when it does not exist."""
    path = Path(path)
    tags: dict[str, str] = {}
    with path.open(newline="") as f:
        lines = f.read().splitlines()
    body_start = 0
    for body_start, line in enumerate(lines):
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].partition(":")
        if sep:
            tags[key.strip()] = value.strip()
    reader = csv.DictReader(lines[body_start:])
    columns = reader.fieldnames or ()
    missing = [c for c in PROFILE_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"profile {path} lacks the column(s) {missing}: the header must include "
                         f"{','.join(PROFILE_COLUMNS)}")
    rows = []
    for line_no, row in enumerate(reader, start=body_start + 2):
        try:
            counts = [int(row[c]) for c in PROFILE_COLUMNS[:4]]
            duration = float(row["duration_s"])
            decode_context = _decode_context(row, counts[1])
        except (TypeError, ValueError):
            raise ValueError(f"profile {path} line {line_no}: token counts must be integers and duration_s "
                             "a number of seconds") from None
        if duration < 0 or min(counts) < 0:
            raise ValueError(f"profile {path} line {line_no}: values must be >= 0")
        if decode_context is not None and not 0 <= decode_context <= counts[3]:
            raise ValueError(f"profile {path} line {line_no}: decode_context_tokens={decode_context} must lie "
                             f"between 0 and sum_context_tokens={counts[3]}")
        rows.append(ProfileRow(StepShape(*counts, -1 if decode_context is None else decode_context), duration))
    try:
        return ProfileLatencyModel(tuple(rows), tags)
    except ValueError as err:
        raise ValueError(f"profile {path}: {err}") from None


def _decode_context(row: dict, num_decodes: int) -> int | None:
    """The row's decode_context_tokens: its own column, else the profiler's decode_context_len
    (per decode), else None (StepShape derives it). Raises ValueError for a non-integer."""
    value = row.get("decode_context_tokens")
    if value not in (None, ""):
        return int(value)
    per_decode = row.get("decode_context_len")
    if per_decode not in (None, ""):
        return num_decodes * int(per_decode)
    return None


def save_profile(path: Path | str, rows: Iterable[ProfileRow], tags: dict[str, str] | None = None) -> None:
    """Write rows (and `# key: value` tag lines) in the format load_profile reads; overwrites."""
    with Path(path).open("w", newline="") as f:
        for key, value in (tags or {}).items():
            f.write(f"# {key}: {value}\n")
        writer = csv.writer(f)
        writer.writerow(PROFILE_COLUMNS + OPTIONAL_COLUMNS)
        for r in rows:
            s = r.shape
            writer.writerow((s.num_prefill_tokens, s.num_decode_tokens, s.num_prefill_seqs, s.sum_context_tokens,
                             repr(r.duration_s), s.decode_context_tokens))
