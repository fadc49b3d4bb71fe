"""Fit a latency profile from the step log of a served run (`adaptive-sarathi profile --from-stats`).

What the profile learns (`duration`):
- "period" (the default): each step's start to the next step's start, host work between steps
  included. That is what a token gap costs while the engine is busy, and what the simulator
  must reproduce: it advances its clock by the model's step_time and adds nothing for host work,
  so a period profile is counted once. Steps followed by idle time (or the log's end) have no
  period and are left out.
- "executor": the executor's own time (StepStats.duration_s), the quantity the grid profiler
  measures; a simulation over it leaves out the host work between steps.

The fit error is reported twice, as median and P90 of |observed / predicted - 1| for decode-only
and mixed steps: over the steps the profile was fitted on, and over `holdout_fraction` of the
steps left out of a second fit on the rest (the honest figure: a profile with a knot at every
step's token count can follow its own steps closely).

`fit_step_stats` fits StepStats kept in memory (a run's listener) the same way, with the periods
the step log would have recorded for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from adaptive_sarathi.engine.latency.fit_error import FitError, fit_error
from adaptive_sarathi.engine.latency.profile import (FORMS, TOKEN_KNOTS, ProfileLatencyModel, ProfileRow,
                                                     save_profile)
from adaptive_sarathi.engine.stats import StepStats
from adaptive_sarathi.engine.step_log import StepLog, StepRecord, records_from_stats

DURATIONS = ("period", "executor")
_DURATION_TAGS = {"period": "period: step start to the next step's start while busy (host work between steps "
                            "included)",
                  "executor": "executor: the executor's time of the step alone (no host work between steps)"}


@dataclass(frozen=True)
class StepLogFit:
    """A profile fitted from a log: the model, the rows it was fitted on (one per used step),
    its in-sample error, the held-out error (None when too few steps to hold any out) and the
    count of steps left out for having no period."""

    model: ProfileLatencyModel
    rows: tuple[ProfileRow, ...]
    error: FitError
    holdout_error: FitError | None
    num_log_steps: int
    num_without_period: int


def fit_step_log(log: StepLog, duration: str = "period", form: str = TOKEN_KNOTS, holdout_fraction: float = 0.2,
                 seed: int = 0, source: str = "") -> StepLogFit:
    """Fit `log` (not mutated) in `form`; the model's tags are the log's header tags plus the
    provenance and errors of this fit (`source` names the log). Raises ValueError naming the
    argument for a bad duration, form or holdout fraction, and when fewer than 2 steps remain."""
    if duration not in DURATIONS:
        raise ValueError(f"duration={duration!r} is unknown: use one of {', '.join(DURATIONS)}")
    if form not in FORMS:
        raise ValueError(f"form={form!r} is unknown: use one of {', '.join(FORMS)}")
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction={holdout_fraction!r} is invalid: use a fraction in [0, 1)")
    rows = step_rows(log.records, duration)
    missing = len(log.records) - len(rows)
    if len(rows) < 2:
        raise ValueError(f"the step log has {len(rows)} steps with a {duration} to fit (of {len(log.records)}): "
                         "record a longer run")
    holdout = _holdout_error(rows, form, holdout_fraction, seed)
    tags = dict(log.tags)
    tags.update({
        "source": f"step-log {source}".rstrip(),
        "form": form,
        "duration": _DURATION_TAGS[duration],
        "steps": f"{len(rows)} of the log's {len(log.records)}" + (f" ({missing} without a period)" if missing else ""),
        "covers": _coverage(rows),
        "fitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    model = ProfileLatencyModel(rows, tags)
    error = fit_error(model, rows)
    # The model holds this dict: the errors, known only once it is fitted, join its tags here.
    tags["fit_error"] = f"|observed/predicted - 1| over the fitted steps: {error}"
    tags["holdout_error"] = (f"|observed/predicted - 1| over {holdout_fraction:.0%} of the steps held out of a fit "
                             f"on the rest: {holdout}") if holdout is not None else "too few steps to hold any out"
    return StepLogFit(model, rows, error, holdout, len(log.records), missing)


def _coverage(rows: tuple[ProfileRow, ...]) -> str:
    """The step shapes the rows span: predictions outside it are extrapolations."""
    decodes = [r.shape.num_decode_tokens for r in rows if not r.shape.num_prefill_seqs]
    mixed = [r.shape.num_tokens for r in rows if r.shape.num_prefill_seqs]
    parts = []
    if decodes:
        parts.append(f"decode-only steps of {min(decodes)}-{max(decodes)} decodes")
    if mixed:
        parts.append(f"steps with prefill chunks of {min(mixed)}-{max(mixed)} tokens")
    contexts = [r.shape.decode_context_tokens for r in rows]
    parts.append(f"decode context up to {max(contexts)} tokens per step")
    return "; ".join(parts)


def fit_step_stats(stats: Sequence[StepStats], tags: dict[str, str] | None = None, duration: str = "period",
                   form: str = TOKEN_KNOTS, holdout_fraction: float = 0.2, seed: int = 0,
                   source: str = "") -> StepLogFit:
    """fit_step_log over StepStats held in memory (consecutive steps of one engine, in step order;
    not mutated), with the periods the step log would record for them; `tags` play the log
    header's part. Raises ValueError as fit_step_log does."""
    return fit_step_log(StepLog(dict(tags or {}), records_from_stats(stats)), duration, form, holdout_fraction,
                        seed, source)


def step_rows(records: Sequence[StepRecord], duration: str = "period") -> tuple[ProfileRow, ...]:
    """One ProfileRow per record with a `duration` ("period": records without one are left out;
    "executor": every record). Raises ValueError for an unknown duration."""
    if duration == "period":
        return tuple(ProfileRow(r.shape, r.period_s) for r in records if r.period_s is not None)
    if duration == "executor":
        return tuple(ProfileRow(r.shape, r.duration_s) for r in records)
    raise ValueError(f"duration={duration!r} is unknown: use one of {', '.join(DURATIONS)}")


def _holdout_error(rows: tuple[ProfileRow, ...], form: str, fraction: float, seed: int) -> FitError | None:
    """The error on a random `fraction` of rows of a fit on the others; None when either side
    would have fewer than 2 rows."""
    held = np.random.default_rng(seed).random(len(rows)) < fraction
    if held.sum() < 2 or (~held).sum() < 2:
        return None
    train = tuple(r for r, h in zip(rows, held) if not h)
    test = [r for r, h in zip(rows, held) if h]
    return fit_error(ProfileLatencyModel(train, {"form": form}), test)


def write_fit(fit: StepLogFit, out: Path | str) -> None:
    """Write the fitted profile as a profile CSV (its tags and rows); overwrites `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_profile(out, fit.rows, fit.model.tags)
