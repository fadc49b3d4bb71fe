"""What a benchmark sends and when: the requests `simulate` would draw for the same flags, with
text prompts of the drawn lengths built from the tokenizer (bench.prompts), or seeded random
token-id prompts for servers without a tokenizer."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from adaptive_sarathi.bench.prompts import PromptBuilder
from adaptive_sarathi.bench.config import DEFAULT_INPUT_LEN, DEFAULT_NUM_REQUESTS, DEFAULT_OUTPUT_LEN, BenchConfig
from adaptive_sarathi.workloads import Fixed, SyntheticLengths, Workload, workload_from_flags


@dataclass(frozen=True)
class BenchRequest:
    """One request of a benchmark: when to send it (seconds on the workload clock, which starts
    at 0), the prompt and its length in tokens, the number of tokens to generate and the workload's SLO class for it
    (None: the top-level targets), which the JSON record keeps for `simulate --replay`."""

    arrival_s: float
    prompt: str | list[int]  # text, or token ids
    prompt_len: int  # tokens the server runs for the prompt (on the endpoint it is built for)
    output_len: int
    slo_class: str | None = None


def draw_workload(config: BenchConfig) -> Workload:
    """The requests (arrival time, prompt and output length) of `config`, drawn by
    workloads.workload_from_flags exactly as `simulate` draws them for the same trace or
    workload file, rate, count, seed, burstiness (simulate's --cv = burstiness^-1/2) and
    --max-total-len. With qps None or inf, the lengths are drawn as at any rate and every
    arrival is 0. Raises ValueError/FileNotFoundError for a bad trace or file."""
    lengths = None
    if config.trace is None and config.workload is None:
        lengths = SyntheticLengths(Fixed(config.input_len or DEFAULT_INPUT_LEN),
                                   Fixed(config.output_len or DEFAULT_OUTPUT_LEN))
    single = config.workload is None
    qps = config.qps
    if single and config.all_at_once:
        qps = 1.0  # lengths come from their own random stream: any finite rate draws the same ones
    spec = workload_from_flags(
        trace=config.trace, workload=config.workload, lengths=lengths, qps=qps,
        num_requests=(config.num_requests or DEFAULT_NUM_REQUESTS) if single else None,
        cv=None if config.burstiness is None else config.burstiness ** -0.5, max_total_len=config.max_total_len,
        seed=config.seed, flag_names={"cv": "--burstiness"})
    requests = spec.generate()
    if config.all_at_once:
        requests = [replace(r, arrival_time_s=0.0) for r in requests]
    return requests


def make_requests(workload: Workload, vocab_size: int, seed: int) -> list[BenchRequest]:
    """Token-id prompts for servers without a tokenizer: a request's own prompt_token_ids where
    the workload gives them (conversations, whose turns share prefixes), else random ids in
    [0, vocab_size) of the drawn length (seeded); prompt lengths are exact."""
    rng = random.Random(seed)
    return [BenchRequest(r.arrival_time_s,
                         list(r.prompt_token_ids) if r.prompt_token_ids is not None
                         else [rng.randrange(vocab_size) for _ in range(r.num_prompt_tokens)],
                         r.num_prompt_tokens, r.num_output_tokens, r.slo_class) for r in workload]


def make_text_requests(workload: Workload, builder: PromptBuilder) -> list[BenchRequest]:
    """Text prompts of the drawn lengths (builder.build: exact, but for chat prompts shorter than
    the template allows), in workload order; the builder's seed fixes the words."""
    requests = []
    for r in workload:
        text, length = builder.build(r.num_prompt_tokens)
        requests.append(BenchRequest(r.arrival_time_s, text, length, r.num_output_tokens, r.slo_class))
    return requests
