"""Request-level (static) batching, as in FasterTransformer."""

from __future__ import annotations

from adaptive_sarathi.engine.schedulers.common import QueueScheduler, StepBuilder


class RequestLevelScheduler(QueueScheduler):
    """A batch forms only when nothing runs: arrived requests are admitted FCFS with whole prompts
    (up to max_num_seqs, blocks with the watermark, prompt tokens summing to at most the budget,
    the first whatever its size) in one prefill-only step. The following steps are decode-only
    until every request of the batch has finished; a request preempted meanwhile rejoins a later
    batch."""

    def _fill(self, step: StepBuilder) -> None:
        if not self._running:
            self._admit_whole_prompts(step)
            return
        for request in self._iter_running():
            self._schedule_decode(step, request)
