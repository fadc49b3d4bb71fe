"""Where request lengths come from: a trace's rows or synthetic distributions.

Every source draws from a numpy Generator it is handed and returns integer arrays, so that a
workload is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from adaptive_sarathi.workloads.request import WorkloadError
from adaptive_sarathi.workloads.traces import load_trace


class LengthSource(Protocol):
    """Draws (prompt, output) token counts for `n` requests."""

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Two int64 arrays of length n, every value >= 1. Consumes `rng`; mutates nothing else."""
        ...


@dataclass(frozen=True)
class Fixed:
    """Always `value` tokens."""

    value: int

    def __post_init__(self) -> None:
        _require(isinstance(self.value, int) and self.value >= 1, "value", self.value, "an integer >= 1")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


@dataclass(frozen=True)
class Uniform:
    """Integers uniform in [low, high], both included."""

    low: int
    high: int

    def __post_init__(self) -> None:
        _require(isinstance(self.low, int) and self.low >= 1, "low", self.low, "an integer >= 1")
        _require(isinstance(self.high, int) and self.high >= self.low, "high", self.high,
                 f"an integer >= low ({self.low})")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)


@dataclass(frozen=True)
class LogNormal:
    """exp(N(log(median), sigma)), rounded and clipped to [min, max] (max None = unbounded).
    Real prompt and output lengths are roughly log-normal with sigma near 1."""

    median: float
    sigma: float
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.median, (int, float)) and self.median >= 1, "median", self.median,
                 "a number >= 1")
        _require(isinstance(self.sigma, (int, float)) and self.sigma >= 0, "sigma", self.sigma, "a number >= 0")
        _require(isinstance(self.min, int) and self.min >= 1, "min", self.min, "an integer >= 1")
        _require(self.max is None or (isinstance(self.max, int) and self.max >= self.min), "max", self.max,
                 f"an integer >= min ({self.min}) or null")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        values = np.rint(rng.lognormal(math.log(self.median), self.sigma, size=n))
        return np.clip(values, self.min, self.max).astype(np.int64)


Distribution = Fixed | Uniform | LogNormal
DISTRIBUTIONS: dict[str, type] = {"fixed": Fixed, "uniform": Uniform, "lognormal": LogNormal}


@dataclass(frozen=True)
class SyntheticLengths:
    """Prompt and output lengths drawn independently from two distributions."""

    prompt: Distribution
    output: Distribution

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.prompt.sample(rng, n), self.output.sample(rng, n)


@dataclass(frozen=True)
class TraceLengths:
    """Rows of a trace CSV drawn uniformly with replacement. max_total_len: rows whose prompt +
    output exceed it are left out before drawing (a context window the requests must fit; None
    keeps every row). Raises WorkloadError when no row fits."""

    path: Path
    max_total_len: int | None = None
    _prompt: np.ndarray = field(init=False, repr=False, compare=False)
    _output: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _require(self.max_total_len is None or (isinstance(self.max_total_len, int) and self.max_total_len >= 2),
                 "max_total_len", self.max_total_len, "an integer >= 2 (prompt + output tokens) or leave it out")
        rows = [r for r in load_trace(self.path)
                if self.max_total_len is None or r.num_prompt_tokens + r.num_output_tokens <= self.max_total_len]
        if not rows:
            raise WorkloadError(f"no row of trace {self.path} fits max_total_len={self.max_total_len} "
                                "(prompt + output tokens): raise it")
        object.__setattr__(self, "_prompt", np.array([r.num_prompt_tokens for r in rows], dtype=np.int64))
        object.__setattr__(self, "_output", np.array([r.num_output_tokens for r in rows], dtype=np.int64))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        rows = rng.integers(0, len(self._prompt), size=n)
        return self._prompt[rows], self._output[rows]


def cap_lengths(prompts: np.ndarray, outputs: np.ndarray, max_prompt_tokens: int | None,
                max_output_tokens: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The lengths with each cap applied (None = no cap); returns new arrays or the inputs."""
    if max_prompt_tokens is not None:
        prompts = np.minimum(prompts, max_prompt_tokens)
    if max_output_tokens is not None:
        outputs = np.minimum(outputs, max_output_tokens)
    return prompts, outputs


def check_cap(name: str, cap: object) -> None:
    """Raise WorkloadError naming `name` unless `cap` is None or an integer >= 1."""
    if cap is not None and not (isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1):
        raise WorkloadError(f"{name}={cap!r} is invalid: use an integer >= 1 or leave it out")


def _require(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise WorkloadError(f"{name}={value!r} is invalid: use {expected}")
