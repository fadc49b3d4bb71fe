"""Snapshots of the scheduler's queues for the budget controller."""

from __future__ import annotations

import math

from adaptive_sarathi.engine.request import in_prefill
from adaptive_sarathi.engine.schedulers.common import QueueScheduler
from adaptive_sarathi.engine.stats import PREFILL_QUEUE_LEN, EngineState


def snapshot_state(scheduler: QueueScheduler, now: float) -> EngineState:
    """EngineState at time `now`; changes nothing the scheduler will schedule (it may move arrived
    requests into the waiting queue, as the next schedule() would, and refresh their kept
    prefix-cache hits). A waiting request's tokens are those past its cached prefix, which its
    prefill_queue entry gives as computed. O(running + arrived waiting + evictions since the
    last call) per call."""
    decodes = 0
    decode_context = 0
    running_prefill = 0
    max_gap = 0.0
    tbt_slack = math.inf
    queue: list[tuple[float, int, int]] = []
    for r in scheduler.running:
        # num_pending_tokens written out (this runs every step), the rule not.
        outputs = r.output_token_ids
        num_tokens = len(r.prompt_token_ids) + len(outputs)
        pending = num_tokens - r.num_computed_tokens
        if in_prefill(len(outputs), pending):
            running_prefill += pending
            if len(queue) < PREFILL_QUEUE_LEN:
                queue.append((math.inf if outputs else r.ttft_deadline_s, pending, r.num_computed_tokens))
        else:
            decodes += 1
            decode_context += num_tokens
            gap = now - r.timeline.token_times[-1]
            if gap > max_gap:
                max_gap = gap
            if r.tbt_target_s - gap < tbt_slack:
                tbt_slack = r.tbt_target_s - gap
    waiting_tokens = 0
    oldest_age = 0.0
    num_arrived = 0
    cached_prefix_tokens = scheduler.cached_prefix_tokens
    for r in scheduler.iter_arrived_waiting(now):
        num_arrived += 1
        # Only the uncached rest is work: admission counts the cached prefix as computed.
        cached = cached_prefix_tokens(r)
        pending = r.num_pending_tokens - cached
        waiting_tokens += pending
        oldest_age = max(oldest_age, now - r.arrival_time)
        if len(queue) < PREFILL_QUEUE_LEN:
            queue.append((math.inf if r.output_token_ids else r.ttft_deadline_s, pending, cached))
    bm = scheduler.block_manager
    return EngineState(
        now_s=now, num_waiting=num_arrived, num_running=scheduler.num_running, num_decodes=decodes,
        num_free_blocks=bm.num_free_blocks, num_total_blocks=bm.num_total_blocks, block_size=bm.block_size,
        admissible_free_tokens=bm.num_admissible_free_blocks * bm.block_size,
        admissible_kv_tokens=bm.num_admissible_blocks * bm.block_size,
        decode_context_tokens=decode_context, running_prefill_tokens=running_prefill,
        waiting_prefill_tokens=waiting_tokens, oldest_waiting_age_s=oldest_age, max_decode_gap_s=max_gap,
        prefill_queue=tuple(queue), decode_tbt_slack_s=tbt_slack)
