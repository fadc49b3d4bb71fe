"""What a benchmark run is asked to do: the server, the workload flags, the SLO and the output."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from adaptive_sarathi.bench.prompts import ENDPOINTS
from adaptive_sarathi.bench.slo import GOODPUT_KEYS, SLO_KEYS
from adaptive_sarathi.controller.slo import LatencyTarget

DEFAULT_NUM_REQUESTS = 100
DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN = 128, 32
PROMPT_KINDS = ("text", "token-ids")
DEFAULT_VOCAB_SIZE = 500  # token-id prompts: ids below it exist in any model's vocabulary


@dataclass(frozen=True)
class BenchConfig:
    """A benchmark run against the OpenAI-compatible server at `base_url` (without /v1).

    The workload, drawn by the rule `simulate` uses (workloads.workload_from_flags, see
    bench.workload), so the same flags and seed give the same requests: `trace` (rows whose
    prompt + output exceed max_total_len left out), a phased `workload` YAML file, or else fixed
    synthetic lengths input_len/output_len (default 128/32). Without a workload file:
    num_requests (default 100) arrive at mean rate `qps` (None or inf: all at time 0) with gamma
    gaps of shape `burstiness` (default 1 = Poisson; cv = burstiness^-1/2); a workload file sets
    these per phase, so they must be None with it. max_concurrency caps the requests in flight.
    slo: targets by key (see bench.slo.SLO_KEYS), each with its percentile. slo_class: the SLO
    class every request names (sent as the x-slo-class header), or None to name none.
    endpoint: "completions" or "chat" (the prompt as the user message). prompts: "text" (built
    from `tokenizer`, a Hugging Face tokenizer directory, or the embedded model's when None; see
    bench.prompts) or "token-ids" (random ids in [0, vocab_size), completions only, for servers
    without a tokenizer). goodput: vLLM's `--goodput` targets in seconds by key (GOODPUT_KEYS):
    a request is good when it succeeded and meets every one.
    """

    base_url: str = "http://127.0.0.1:8000"
    model: str | None = None
    api_key: str | None = None
    trace: str | None = None
    workload: str | None = None
    input_len: int | None = None
    output_len: int | None = None
    max_total_len: int | None = None
    vocab_size: int | None = None  # token-id prompts only; None: DEFAULT_VOCAB_SIZE
    num_requests: int | None = None
    qps: float | None = None
    burstiness: float | None = None
    max_concurrency: int | None = None
    seed: int = 0
    slo: Mapping[str, LatencyTarget] = field(default_factory=dict)
    json_path: str | None = None
    progress: bool = True
    slo_class: str | None = None
    endpoint: str = "completions"
    prompts: str = "text"
    tokenizer: str | None = None
    goodput: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len", "vocab_size", "num_requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} is invalid: use an integer >= 1")
        if self.qps is not None and not self.qps > 0:
            raise ValueError(f"qps={self.qps} is invalid: use a rate > 0 (inf sends everything at once)")
        if self.burstiness is not None and not 0 < self.burstiness < math.inf:
            raise ValueError(f"burstiness={self.burstiness} is invalid: use a gamma shape > 0 (1 = Poisson)")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency={self.max_concurrency} is invalid: use an integer >= 1")
        if self.trace is not None and self.workload is not None:
            raise ValueError("give --trace or --workload, not both")
        if self.trace is not None or self.workload is not None:
            given = [flag for flag, value in (("--input-len", self.input_len), ("--output-len", self.output_len))
                     if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for synthetic lengths; --trace and --workload give "
                                 "their own lengths")
        if self.slo_class is not None and not self.slo_class.strip():
            raise ValueError("--slo-class is empty: name a class of the server's SLO policy, or leave it out")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"--endpoint {self.endpoint}: use one of {', '.join(ENDPOINTS)}")
        if self.prompts not in PROMPT_KINDS:
            raise ValueError(f"--prompts {self.prompts}: use one of {', '.join(PROMPT_KINDS)}")
        if self.prompts == "token-ids" and self.endpoint == "chat":
            raise ValueError("--prompts token-ids needs --endpoint completions: chat messages are text")
        if self.prompts == "token-ids" and self.tokenizer is not None:
            raise ValueError("--tokenizer builds text prompts: leave it out with --prompts token-ids")
        if self.prompts == "text" and self.vocab_size is not None:
            raise ValueError("--vocab-size bounds token-id prompts: add --prompts token-ids, or leave it out")
        bad = {key: value for key, value in self.goodput.items() if key not in GOODPUT_KEYS or not value > 0}
        if bad:
            raise ValueError(f"--goodput {bad}: use KEY:MS with KEY among {', '.join(GOODPUT_KEYS)} and MS > 0")
        unknown = set(self.slo) - set(SLO_KEYS)
        if unknown:
            raise ValueError(f"unknown SLO keys {sorted(unknown)}: use {', '.join(SLO_KEYS)}")

    @property
    def all_at_once(self) -> bool:
        """Every request is sent at time 0 (qps None or inf, and no workload file)."""
        return self.workload is None and (self.qps is None or math.isinf(self.qps))
