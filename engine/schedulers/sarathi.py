"""Sarathi-Serve: stall-free hybrid batches of decodes and chunked prefills under one token budget."""

from __future__ import annotations

from adaptive_sarathi.engine.request import Request, RequestStatus
from adaptive_sarathi.engine.schedulers.common import QueueScheduler, StepBuilder


def _deadline(request: Request) -> float:
    return request.ttft_deadline_s


class SarathiScheduler(QueueScheduler):
    """Each step: every running decode (running order), then prompt chunks by TTFT deadline,
    earliest first, while the token budget lasts: running prefills and new requests from the
    waiting queue (itself in deadline order) interleaved, so a request due sooner takes its chunk
    before one due later, whether or not the later one started first. With no deadlines (every
    deadline infinite) that is running prefills in running order, then new requests FCFS. A prompt
    takes at most `budget.chunk_limit` tokens per step: the most urgent get whole chunks and
    those due later the rest of the budget, so several partial prefills may share a step.
    Admission stops at the first waiting request whose chunk's blocks do not fit (head of line)
    and is skipped in a step that had to preempt. A new request's cached prefix costs no budget:
    its chunks cover the uncached rest."""

    def _fill(self, step: StepBuilder) -> None:
        token_budget = step.budget.token_budget
        prefills = []
        for request in self._iter_running():
            if step.num_tokens >= token_budget:
                break
            if request.is_prefill:
                prefills.append(request)
            else:
                self._schedule_decode(step, request)
        prefills.sort(key=_deadline)  # stable: equal deadlines keep the running order
        admitting = True
        for request in prefills:
            if step.num_tokens >= token_budget:
                return
            if admitting:
                admitting = self._admit_due(step, before_s=request.ttft_deadline_s)
                if step.remaining == 0:
                    return
            if request.status is RequestStatus.RUNNING:  # the decodes may have preempted it
                n = min(request.num_pending_tokens, step.budget.chunk_limit, step.remaining)
                self._schedule_running(step, request, n)
        if admitting:
            self._admit_due(step, before_s=None)

    def _admit_due(self, step: StepBuilder, before_s: float | None) -> bool:
        """Admit waiting requests, each with a chunk within the budget: with `before_s`, only heads
        of the waiting queue due strictly before it (relegated requests wait for the end of the
        step's prompt work); with None, any admissible head. Returns False when admission must stop
        this step: the step preempted (it is short of blocks: admitting would only feed the
        thrash) or the head's chunk does not fit the cache."""
        while step.remaining > 0:
            if step.batch.preempted_ids:
                return False
            request = self._admissible_head()
            if request is None:
                return True
            if before_s is not None and (not self._waiting or request is not self._waiting[0]
                                         or request.ttft_deadline_s >= before_s):
                return True
            cached = self._prefix_hit(request)
            n = min(request.num_pending_tokens - len(cached) * self._block_size, step.budget.chunk_limit,
                    step.remaining)
            if not self._fits(request, n, cached):
                return False
            self._admit(step, request, n, cached)
        return not step.batch.preempted_ids
