"""Garbage-collector settings for a long-running engine process."""

from __future__ import annotations

import gc

# Young-generation threshold (the interpreter's default is 700 allocations). A step allocates a few
# objects per running request (outputs, chunks, updates), so at 256 requests the default ran a
# collection in most steps: 240 us per step on average, and a slower median step
# (experiments/results/host_overhead_bench.md).
YOUNG_THRESHOLD = 20_000


def tune_garbage_collection() -> None:
    """Freeze everything alive now (the model, tokenizer and engine built at start-up: the
    collector never traverses them again) and collect young objects less often. Call once, after
    the engine is built; it changes the settings of the whole process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 50, 50)
