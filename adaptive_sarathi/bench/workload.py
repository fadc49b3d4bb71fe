"""What a benchmark sends and when: request lengths (a trace or fixed), token-id prompts, arrivals."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptive_sarathi.workloads import ArrivalProcess, RequestLengths, load_trace, resolve_trace


@dataclass(frozen=True)
class BenchRequest:
    """One request of a benchmark: an exact prompt and the number of tokens to generate."""

    prompt_token_ids: list[int]
    output_len: int


def request_lengths(num_requests: int, trace: Path | str | None, input_len: int, output_len: int,
                    max_total_len: int | None, seed: int) -> list[RequestLengths]:
    """`num_requests` lengths: trace rows shuffled by `seed` (reused in turn when the trace is
    shorter), skipping rows over `max_total_len` tokens; fixed lengths without a trace. Raises
    ValueError when no trace row fits."""
    if trace is None:
        return [RequestLengths(input_len, output_len)] * num_requests
    rows = [r for r in load_trace(resolve_trace(trace))
            if max_total_len is None or r.num_prompt_tokens + r.num_output_tokens <= max_total_len]
    if not rows:
        raise ValueError(f"no row of trace {trace} fits max_total_len={max_total_len}: raise it")
    random.Random(seed).shuffle(rows)
    return [rows[i % len(rows)] for i in range(num_requests)]


def make_requests(lengths: list[RequestLengths], vocab_size: int, seed: int) -> list[BenchRequest]:
    """Random token-id prompts of the given lengths, so that the server needs no tokenizer and
    prompt lengths are exact."""
    rng = random.Random(seed)
    return [BenchRequest([rng.randrange(vocab_size) for _ in range(length.num_prompt_tokens)],
                         length.num_output_tokens) for length in lengths]


def arrival_offsets(num_requests: int, qps: float, burstiness: float, seed: int) -> list[float]:
    """Send times (seconds after the start) of a gamma arrival process with mean rate `qps` and
    shape `burstiness` (1 = Poisson); all zero when qps is infinite."""
    if math.isinf(qps):
        return [0.0] * num_requests
    times = ArrivalProcess(qps, cv=burstiness ** -0.5).times(np.random.default_rng(seed), 0.0,
                                                              num_requests=num_requests)
    return (times - times[0]).tolist()  # the first request starts the clock
