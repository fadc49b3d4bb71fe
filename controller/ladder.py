"""Candidate budgets and the step shape each one would produce from an engine state."""

from __future__ import annotations

import bisect
from itertools import accumulate
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


class CandidateShapes:
    """candidate_shape(state, budget, budget - decodes) for any number of budgets of one state:
    each request's chunk limited only by the budget, as the adaptive policy plans. The prefill
    queue's running sums are built once, so each shape costs a bisection instead of a walk of
    the queue (up to PREFILL_QUEUE_LEN requests, every candidate of every step)."""

    def __init__(self, state: EngineState):
        self._state = state
        queue = state.prefill_queue
        self._pending = list(accumulate(pending for _, pending, _ in queue))  # prompt tokens of requests 0..i
        self._context = list(accumulate(computed + pending for _, pending, computed in queue))
        self._computed = [computed for _, _, computed in queue]

    def __call__(self, budget: int) -> StepShape:
        state = self._state
        decodes = min(state.num_decodes, budget)
        decode_context = state.decode_context_tokens
        if decodes < state.num_decodes:
            decode_context = decode_context * decodes // state.num_decodes
        prefill = min(budget - decodes, state.running_prefill_tokens + state.waiting_prefill_tokens)
        if not self._pending:
            return candidate_shape(state, budget, budget - decodes)
        context, seqs = decode_context, 0
        if prefill > 0:
            pending = self._pending
            last = bisect.bisect_left(pending, prefill)  # the request whose chunk reaches `prefill`
            if last < len(pending):
                before = pending[last - 1] if last else 0
                context += (self._context[last - 1] if last else 0) + self._computed[last] + prefill - before
                seqs = last + 1
            else:  # past the listed queue: one more chunk, its context the chunk itself
                context += self._context[-1] + prefill - pending[-1]
                seqs = last + 1
        return StepShape(prefill, decodes, seqs, context, decode_context)


def ladder_candidates(ladder: tuple[int, ...], floor: int, cap: int) -> tuple[int, ...]:
    """`floor`, then the ladder rungs in (floor, cap], ascending."""
    return (floor, *ladder[bisect.bisect_right(ladder, floor):bisect.bisect_right(ladder, cap)])


def last_true(candidates: tuple[int, ...], holds: Callable[[int], bool], hint: float | None = None) -> int:
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
                 limit_s: float, hint: int | None = None, flat_from: int | None = None) -> int:
    """The largest of `floor` and the ladder rungs in (floor, cap] whose time_of(budget) <= limit_s;
    `floor` when nothing fits. time_of must not shrink as the budget grows (true of step time).
    `flat_from`: budgets from it up build the same step (all the queued work), so time_of is
    constant there and only the first rung at or above it is timed.

    Cost in time_of calls, since it runs every step: the floor, the hint (default the top) and
    the rung above it when the hint still answers (2-3 calls); otherwise the search restarts at
    the rung where the line through the floor's and the hint's times reaches limit_s, which
    lands within a rung or two of the answer for step times (piecewise linear in the budget),
    and gallops from there. Each budget is timed once."""
    candidates = ladder_candidates(ladder, floor, cap)
    top = candidates[-1]
    if flat_from is not None:
        candidates = candidates[:bisect.bisect_left(candidates, flat_from) + 1]
    times: dict[int, float] = {}

    def timed(budget: int) -> float:
        t = times.get(budget)
        if t is None:
            t = times[budget] = time_of(budget)
        return t

    t_floor = timed(floor)
    n = len(candidates)
    if t_floor > limit_s:
        return floor
    if n == 1:
        return top
    i = n - 1 if hint is None else min(max(bisect.bisect_right(candidates, hint) - 1, 0), n - 1)
    t_hint = timed(candidates[i])
    if t_hint <= limit_s and (i == n - 1 or timed(candidates[i + 1]) > limit_s):
        found = i
    else:
        guess = candidates[i]
        if candidates[i] > floor and t_hint > t_floor:
            guess = floor + (limit_s - t_floor) * (candidates[i] - floor) / (t_hint - t_floor)
        found = max(0, last_true(candidates, lambda b: timed(b) <= limit_s, guess))
    return top if found == n - 1 else candidates[found]
