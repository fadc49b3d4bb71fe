"""A request's progress, counted in tokens, and its timeline."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adaptive_sarathi.engine.json_mode import JSONMode
from adaptive_sarathi.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from adaptive_sarathi.engine.block_manager import PrefixHit


def in_prefill(num_output_tokens: int, num_pending_tokens: int) -> bool:
    """The one is-prefill rule: a request is in prefill while it has no output yet or more than one
    token is pending. A preempted request recomputes its prompt and outputs (all pending again), so
    its recompute counts as prefill; a request with outputs and exactly one pending token (its
    last output) decodes."""
    return num_output_tokens == 0 or num_pending_tokens > 1


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the context window
    ABORT = "abort"  # cancelled by the client or the server


@dataclass
class RequestTimeline:
    """Engine-clock timestamps (seconds) of one request's life."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    token_times: list[float] = field(default_factory=list)
    finished_time: float | None = None

    @property
    def ttft(self) -> float | None:
        """Arrival to first output token, seconds."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def scheduling_delay(self) -> float | None:
        """Arrival to first scheduled, seconds."""
        if self.first_scheduled_time is None:
            return None
        return self.first_scheduled_time - self.arrival_time

    @property
    def tbts(self) -> list[float]:
        """Gaps between consecutive output tokens, seconds."""
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]


@dataclass
class Request:
    """One generation request as the scheduler sees it.

    Progress is counted in tokens: the request has `num_tokens` = prompt + outputs so far, of which
    `num_computed_tokens` already sit in the KV cache. "In prefill" is derived, never stored: a
    request with more than one token pending is prefilling (a fresh prompt, or the recompute of a
    preempted request); exactly one pending token after some outputs is a decode.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_time: float
    eos_token_ids: tuple[int, ...] = ()  # any of them ends generation (unless ignore_eos)
    slo_class: str | None = None  # the SLO policy's request class (None: its top-level targets)
    # Stamped by the engine from its policy's SLO targets (inf: no target): when the first token is
    # due (arrival + the class's TTFT target), and the most time one token gap may take.
    ttft_deadline_s: float = math.inf
    tbt_target_s: float = math.inf
    json_mode: JSONMode | None = None  # the model's JSON-mode checks, for a request in JSON mode
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    num_preemptions: int = 0
    # Prompt tokens found in the prefix cache at the first admission (not computed for it).
    num_cached_tokens: int = 0
    # Content hashes of the first full blocks of prompt + outputs (engine.block_hash): the
    # prompt's when the scheduler queues the request, grown as commits need more; tokens never
    # change, so they stay valid across preemption.
    block_hashes: list[bytes] = field(default_factory=list, repr=False)
    # While waiting: its cached prefix, kept up to date by the scheduler (BlockManager.refresh_hit).
    prefix_hit: PrefixHit | None = field(default=None, repr=False)
    timeline: RequestTimeline = field(init=False)

    def __post_init__(self) -> None:
        self.timeline = RequestTimeline(arrival_time=self.arrival_time)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    # The properties below are read for every running request every step: they are written out
    # rather than built on each other to save the nested calls.
    @property
    def num_pending_tokens(self) -> int:
        """Tokens not yet in the KV cache; the next step may compute up to this many."""
        return len(self.prompt_token_ids) + len(self.output_token_ids) - self.num_computed_tokens

    @property
    def is_prefill(self) -> bool:
        """See in_prefill."""
        outputs = self.output_token_ids
        return in_prefill(len(outputs), len(self.prompt_token_ids) + len(outputs) - self.num_computed_tokens)

    def token_ids_slice(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + outputs."""
        p = len(self.prompt_token_ids)
        if end <= p:
            return self.prompt_token_ids[start:end]
        # Decodes read only the outputs' tail: never copy the whole prompt to slice it.
        if start >= p:
            return self.output_token_ids[start - p:end - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[:end - p]
