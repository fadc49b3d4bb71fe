"""What the engine hands back per request per step: tokens, text deltas, finish state, timings."""

from __future__ import annotations

from dataclasses import dataclass

from adaptive_sarathi.engine.batch import TokenLogprobs
from adaptive_sarathi.engine.request import FinishReason, RequestTimeline


# Slots: one is built per request per step, and without a __dict__ each costs one allocation
# (and one object for the garbage collector to track) less.
@dataclass(slots=True)
class RequestOutput:
    """A request's state after a step. token_ids/text are cumulative; new_token_ids/delta_text are
    what this step added (delta_text may lag tokens while a multi-byte character is incomplete).
    error: why the engine ended this request on its own (finish reason abort), else None.
    slo_class: the SLO class the request was added with (None: the policy's top-level targets).
    new_logprobs: the logprobs of new_token_ids, one each, when the request asked for them (and
    the executor computes logits), else None.
    num_cached_tokens: prompt tokens found in the prefix cache when the request was first
    admitted (0 before that, and with caching off): usage.prompt_tokens_details.cached_tokens."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    new_token_ids: list[int]
    text: str
    delta_text: str
    finished: bool
    finish_reason: FinishReason | None
    timeline: RequestTimeline
    num_preemptions: int = 0
    error: str | None = None
    slo_class: str | None = None
    new_logprobs: list[TokenLogprobs] | None = None
    num_cached_tokens: int = 0

    @property
    def finish_reason_str(self) -> str | None:
        return None if self.finish_reason is None else self.finish_reason.value
