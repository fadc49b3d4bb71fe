"""Orca: iteration-level hybrid batches of decodes and whole prompts (no chunking)."""

from __future__ import annotations

from adaptive_sarathi.engine.schedulers.common import QueueScheduler, StepBuilder


class OrcaScheduler(QueueScheduler):
    """Each step: every running decode, then whole prompts FCFS while the step's tokens stay within
    the budget. The step's first prompt is admitted whatever its size (so a long prompt never
    starves), which lets a step with a long prompt exceed the budget: there is no chunking."""

    def _fill(self, step: StepBuilder) -> None:
        for request in self._iter_running():
            self._schedule_decode(step, request)
        # A step that had to preempt is short of blocks: admitting now would only feed the thrash.
        if not step.batch.preempted_ids:
            self._admit_whole_prompts(step)
