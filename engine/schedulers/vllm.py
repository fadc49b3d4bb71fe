"""vLLM v0's default policy, the prefill-prioritizing baseline of the Sarathi-Serve paper."""

from __future__ import annotations

from adaptive_sarathi.engine.schedulers.common import QueueScheduler, StepBuilder


class VllmScheduler(QueueScheduler):
    """A step is PREFILL-ONLY when the arrived waiting head can be admitted whole: whole prompts
    are admitted FCFS while their tokens sum to at most the budget (the first one whatever its
    size). Otherwise it is DECODE-ONLY: every running request decodes one token, the budget
    ignored, preempting from the tail when blocks run out. Decodes stall while prompts arrive."""

    def _fill(self, step: StepBuilder) -> None:
        head = self._admissible_head()
        cached = self._prefix_hit(head) if head is not None else []
        if head is not None and self._fits(head, head.num_pending_tokens - len(cached) * self._block_size, cached):
            self._admit_whole_prompts(step)
            return
        for request in self._iter_running():
            self._schedule_decode(step, request)
