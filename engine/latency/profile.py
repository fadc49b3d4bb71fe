"""A measured latency profile: a CSV of step shapes and their seconds, interpolated.

File format (written by `save_profile`; the GPU profiler writes the same):

    # gpu: h100
    # model: llama-3-8b
    # dtype: bfloat16
    # torch: 2.5.1
    num_prefill_tokens,num_decode_tokens,num_prefill_seqs,sum_context_tokens,duration_s
    0,1,0,1024,0.0068
    512,0,1,512,0.0151
    ...

Leading `# key: value` lines are tags (free-form provenance: GPU, model, dtype, versions). Other
columns are allowed and ignored.

Interpolation: duration = base(num_prefill_tokens) + a * num_decode_tokens
+ b * sum_context_tokens + c * num_prefill_seqs, where base is piecewise-linear between the
profile's distinct prefill-token counts (so a step between grid points such as 512 -> 520 tokens
is reproduced when the grid samples both) and extended with its end slopes beyond them; the knot
values and a, b, c are fitted jointly by least squares over all rows. Predictions are clamped at 0.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from adaptive_sarathi.engine.latency.shape import StepShape

PROFILE_COLUMNS = ("num_prefill_tokens", "num_decode_tokens", "num_prefill_seqs", "sum_context_tokens",
                   "duration_s")


@dataclass(frozen=True)
class ProfileRow:
    shape: StepShape
    duration_s: float


@dataclass(frozen=True)
class ProfileLatencyModel:
    """Fitted from `rows` on construction; `tags` carries the file's provenance lines."""

    rows: tuple[ProfileRow, ...]
    tags: dict[str, str] = field(default_factory=dict, compare=False)
    knots: tuple[float, ...] = field(init=False)
    knot_values: tuple[float, ...] = field(init=False)
    decode_s: float = field(init=False)  # a: seconds per decode token
    context_s: float = field(init=False)  # b: seconds per attended context token
    prefill_seq_s: float = field(init=False)  # c: seconds per prefill chunk
    rms_error_s: float = field(init=False)  # root-mean-square residual of the fit over the rows

    def __post_init__(self) -> None:
        if len(self.rows) < 2:
            raise ValueError(f"a latency profile needs at least 2 rows, got {len(self.rows)}: profile more shapes")
        knots = sorted({r.shape.num_prefill_tokens for r in self.rows})
        design = np.zeros((len(self.rows), len(knots) + 3))
        for i, r in enumerate(self.rows):
            for k, w in _hat(knots, r.shape.num_prefill_tokens):
                design[i, k] = w
            design[i, -3:] = (r.shape.num_decode_tokens, r.shape.sum_context_tokens, r.shape.num_prefill_seqs)
        target = np.array([r.duration_s for r in self.rows])
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        residual = design @ coef - target
        for name, value in dict(knots=tuple(float(k) for k in knots), knot_values=tuple(coef[:-3].tolist()),
                                decode_s=float(coef[-3]), context_s=float(coef[-2]), prefill_seq_s=float(coef[-1]),
                                rms_error_s=float(np.sqrt(np.mean(residual ** 2)))).items():
            object.__setattr__(self, name, value)

    def step_time(self, shape: StepShape) -> float:
        base = sum(self.knot_values[k] * w for k, w in _hat(self.knots, shape.num_prefill_tokens))
        t = (base + self.decode_s * shape.num_decode_tokens + self.context_s * shape.sum_context_tokens
             + self.prefill_seq_s * shape.num_prefill_seqs)
        return t if t > 0.0 else 0.0


def _hat(knots, x: float) -> list[tuple[int, float]]:
    """Weights of piecewise-linear interpolation at x over sorted `knots`, linear beyond the ends."""
    if len(knots) == 1:
        return [(0, 1.0)]
    i = min(max(bisect.bisect_right(knots, x) - 1, 0), len(knots) - 2)
    frac = (x - knots[i]) / (knots[i + 1] - knots[i])
    return [(i, 1.0 - frac), (i + 1, frac)]


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
    missing = [c for c in PROFILE_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"profile {path} lacks the column(s) {missing}: the header must include "
                         f"{','.join(PROFILE_COLUMNS)}")
    rows = []
    for line_no, row in enumerate(reader, start=body_start + 2):
        try:
            shape = StepShape(*(int(row[c]) for c in PROFILE_COLUMNS[:4]))
            duration = float(row["duration_s"])
        except (TypeError, ValueError):
            raise ValueError(f"profile {path} line {line_no}: token counts must be integers and duration_s "
                             "a number of seconds") from None
        if duration < 0 or min(shape.num_prefill_tokens, shape.num_decode_tokens, shape.num_prefill_seqs,
                               shape.sum_context_tokens) < 0:
            raise ValueError(f"profile {path} line {line_no}: values must be >= 0")
        rows.append(ProfileRow(shape, duration))
    try:
        return ProfileLatencyModel(tuple(rows), tags)
    except ValueError as err:
        raise ValueError(f"profile {path}: {err}") from None


def save_profile(path: Path | str, rows: Iterable[ProfileRow], tags: dict[str, str] | None = None) -> None:
    """Write rows (and `# key: value` tag lines) in the format load_profile reads; overwrites."""
    with Path(path).open("w", newline="") as f:
        for key, value in (tags or {}).items():
            f.write(f"# {key}: {value}\n")
        writer = csv.writer(f)
        writer.writerow(PROFILE_COLUMNS)
        for r in rows:
            s = r.shape
            writer.writerow((s.num_prefill_tokens, s.num_decode_tokens, s.num_prefill_seqs, s.sum_context_tokens,
                             repr(r.duration_s)))
