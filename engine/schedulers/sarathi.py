"""Sarathi-Serve: stall-free hybrid batches of decodes and chunked prefills under one token budget."""

from __future__ import annotations

from adaptive_sarathi.engine.request import RequestStatus
from adaptive_sarathi.engine.schedulers.common import QueueScheduler, StepBuilder


class SarathiScheduler(QueueScheduler):
    """Each step: every running decode (running order), then running prefills, then new requests,
    while the token budget lasts. A prefill takes at most `budget.chunk_limit` tokens per step, so
    several partial prefills may share a step; admission stops at the first waiting request whose
    chunk's blocks do not fit (head-of-line, FCFS). A new request's cached prefix costs no budget:
    its chunks cover the uncached rest."""

    def _fill(self, step: StepBuilder) -> None:
        chunk_limit = step.budget.chunk_limit
        token_budget = step.budget.token_budget
        prefills = []
        for request in self._iter_running():
            if step.num_tokens >= token_budget:
                break
            if request.is_prefill:
                prefills.append(request)
            else:
                self._schedule_decode(step, request)
        for request in prefills:
            if step.num_tokens >= token_budget:
                break
            if request.status is RequestStatus.RUNNING:  # the decodes may have preempted it
                n = min(request.num_pending_tokens, chunk_limit, step.remaining)
                self._schedule_running(step, request, n)
        # A step that had to preempt is short of blocks: admitting now would only feed the thrash.
        if step.batch.preempted_ids:
            return
        while step.remaining > 0 and (request := self._admissible_head()) is not None:
            cached = self._prefix_hit(request)
            n = min(request.num_pending_tokens - len(cached) * self._block_size, chunk_limit, step.remaining)
            if not self._fits(request, n, cached):
                break
            self._admit(step, request, n, cached)
