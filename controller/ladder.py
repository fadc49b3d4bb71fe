"""Candidate budgets and the step shape each one would produce from an engine state."""

from __future__ import annotations

import bisect
from typing import Callable

from adaptive_sarathi.controller.slo import BudgetBounds
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.stats import EngineState


def budget_ladder(bounds: BudgetBounds, tile_tokens: int) -> tuple[int, ...]:
    """Ascending budgets: the min bound, every multiple of `tile_tokens` strictly between, the max
    bound. Multiples of the GEMM tile never pay for a partly filled tile."""
    if tile_tokens < 1:
        raise ValueError(f"tile_tokens={tile_tokens!r} is invalid: use an integer >= 1")
    lo, hi = bounds.min_token_budget, bounds.max_token_budget
    first = (lo // tile_tokens + 1) * tile_tokens
    return tuple(sorted({lo, hi, *range(first, hi, tile_tokens)}))


def candidate_shape(state: EngineState, budget: int, chunk: int) -> StepShape:
    """The step a Sarathi-style scheduler would build from `state` under (budget, chunk): decodes
    first, then prefill tokens up to the budget, at most `chunk` per request.

    Chunks are taken from the state's prefill queue in order, each attending to its computed
    prefix; past the queue's listed requests (or without a queue), a chunk's context is counted
    as the chunk itself.
    """
    decodes = min(state.num_decodes, budget)
    decode_context = state.decode_context_tokens
    if decodes < state.num_decodes:
        decode_context = decode_context * decodes // state.num_decodes
    prefill = min(budget - decodes, state.running_prefill_tokens + state.waiting_prefill_tokens)
    if state.prefill_queue:
        return _queued_shape(state, decodes, decode_context, prefill, max(chunk, 1))
    seqs = 0
    if prefill > 0:
        requests = state.num_running - state.num_decodes + state.num_waiting
        seqs = max(1, min(-(-prefill // max(chunk, 1)), requests))
    return StepShape(prefill, decodes, seqs, decode_context + prefill)


def _queued_shape(state: EngineState, decodes: int, decode_context: int, prefill: int, chunk: int) -> StepShape:
    left, context, seqs = prefill, decode_context, 0
    for _, pending, computed in state.prefill_queue:
        if left <= 0:
            break
        take = min(pending, chunk, left)
        left -= take
        context += computed + take
        seqs += 1
    if left > 0:  # requests past the listed queue
        context += left
        seqs += -(-left // chunk)
    return StepShape(prefill, decodes, seqs, context, decode_context)


def ladder_candidates(ladder: tuple[int, ...], floor: int, cap: int) -> tuple[int, ...]:
    """`floor`, then the ladder rungs in (floor, cap], ascending."""
    return (floor, *ladder[bisect.bisect_right(ladder, floor):bisect.bisect_right(ladder, cap)])


def last_true(candidates: tuple[int, ...], holds: Callable[[int], bool], hint: int | None = None) -> int:
    """The index of the last candidate for which holds() is true, -1 when none is; holds must be
    true up to some index and false after it. The search gallops out from `hint` (a budget, e.g.
    the previous step's; default the top), so a steady state costs two or three holds() calls,
    not a full binary search. A non-monotone holds() can only make it stop early."""
    memo: dict[int, bool] = {}

    def at(i: int) -> bool:
        if i not in memo:
            memo[i] = holds(candidates[i])
        return memo[i]

    n = len(candidates)
    i = n - 1 if hint is None else min(max(bisect.bisect_right(candidates, hint) - 1, 0), n - 1)
    step = 1
    if at(i):  # gallop up; invariant below: at(lo) holds, at(hi) does not (or hi == n)
        lo = i
        while lo + step < n and at(lo + step):
            lo += step
            step *= 2
        hi = min(lo + step, n)
    else:  # gallop down
        hi = i
        while hi - step >= 0 and not at(hi - step):
            hi -= step
            step *= 2
        if hi - step < 0 and not at(0):
            return -1
        lo = max(hi - step, 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid):
            lo = mid
        else:
            hi = mid
    return lo


def search_ladder(ladder: tuple[int, ...], floor: int, cap: int, time_of: Callable[[int], float],
                  limit_s: float, hint: int | None = None) -> int:
    """The largest of `floor` and the ladder rungs in (floor, cap] whose time_of(budget) <= limit_s;
    `floor` when nothing fits. time_of must not shrink as the budget grows (true of step time)."""
    candidates = ladder_candidates(ladder, floor, cap)
    return candidates[max(0, last_true(candidates, lambda b: time_of(b) <= limit_s, hint))]
