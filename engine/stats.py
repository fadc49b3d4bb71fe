"""StepStats: the plain record every engine step emits to the controller and the metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaptive_sarathi.engine.latency.shape import StepShape


@dataclass(frozen=True)
class StepStats:
    """Shape, cost and queue state of one iteration. Units are in the field names or noted.

    `shape` is computed once per step from the scheduled batch (StepShape.from_batch); the token
    counts below are read from it, and latency models learn from it as it is.

    start_time_s is the engine clock before the budget decision; duration_s is the executor's
    own time for the step. host_gap_s is the engine-clock time from the previous step's executor
    return to this step's start (updating, outputs, whatever the caller did between steps); it is
    None for the first step and whenever the engine ran out of work in between, when the gap is
    idle time. So while host_gap_s of the next step is not None, the next step's start_time_s
    minus this one's is this step's period: its whole cost to the token rhythm, host included.
    """

    step_index: int
    start_time_s: float
    duration_s: float
    shape: StepShape
    num_seqs: int
    num_waiting: int
    num_running: int
    num_free_blocks: int
    num_total_blocks: int
    num_preempted: int
    token_budget: int
    max_chunk: int
    first_token_latencies_s: tuple[float, ...] = ()  # TTFTs of requests whose first token came this step
    max_token_gap_s: float = 0.0  # largest gap between consecutive tokens of one request this step
    host_gap_s: float | None = None
    num_relegated: int = 0  # requests moved behind the others this step, their TTFT deadline missed
    budget_reason: str = ""  # the StepBudget's reason this step ran under
    # The policy's predicted seconds of this step (StepBudget.predicted_duration_s), made before
    # it ran; None when the policy has no latency model.
    predicted_duration_s: float | None = None
    num_cache_query_tokens: int = 0  # tokens of this step's admissions looked up in the prefix cache

    @property
    def num_cached_tokens(self) -> int:
        """Tokens this step's admissions found in the prefix cache (not computed)."""
        return self.shape.num_cached_tokens

    @property
    def num_tokens(self) -> int:
        return self.shape.num_tokens

    @property
    def num_decode_tokens(self) -> int:
        return self.shape.num_decode_tokens

    @property
    def num_prefill_tokens(self) -> int:
        return self.shape.num_prefill_tokens

    @property
    def num_prefill_seqs(self) -> int:
        return self.shape.num_prefill_seqs

    @property
    def sum_context_tokens(self) -> int:
        """Context lengths attended, summed over the step's sequences."""
        return self.shape.sum_context_tokens


@dataclass(frozen=True)
class EngineState:
    """What the controller sees before deciding a step's budget (a snapshot; times in seconds on
    the engine clock, counts in tokens or requests)."""

    now_s: float
    num_waiting: int  # arrived and queued (new or preempted)
    num_running: int
    num_decodes: int  # running requests whose next step is a single decode token
    num_free_blocks: int
    num_total_blocks: int
    # Deployment facts, from the block manager (the scheduler's own admission rule): a policy reads
    # them here, never from its constructor. 0 for all three means no KV telemetry.
    block_size: int  # tokens per KV block
    admissible_free_tokens: int  # free KV tokens above the admission watermark (what admissions may take now)
    admissible_kv_tokens: int  # KV tokens admissions may ever fill (the cache less the watermark)
    decode_context_tokens: int = 0  # summed context of those decodes (what a decode step attends)
    running_prefill_tokens: int = 0  # pending prompt tokens of admitted, still-prefilling requests
    waiting_prefill_tokens: int = 0  # pending tokens of arrived waiting requests past their cached prefixes
    oldest_waiting_age_s: float = 0.0  # now - arrival of the oldest arrived waiting request
    max_decode_gap_s: float = 0.0  # longest time since a running decode's last token (TBT pressure)
    # (TTFT deadline s, pending tokens, computed tokens) of the first PREFILL_QUEUE_LEN requests
    # with prefill to do, in the order the scheduler serves them (running prefills, then arrived
    # waiting ones). The deadline is inf without a TTFT target, and for a request that already has
    # its first token (a preempted one recomputing): only its tokens to wait for. Computed tokens
    # are the prefix its next chunk attends to; for a waiting request, its cached prefix (then
    # pending counts only the rest).
    prefill_queue: tuple[tuple[float, int, int], ...] = ()
    # min over running decodes of (its TBT target - the time since its last token): how long the
    # next step may take before the tightest decode misses its target; inf without TBT targets.
    decode_tbt_slack_s: float = math.inf


PREFILL_QUEUE_LEN = 64  # deadlines further back are seconds away: planning for them can wait
