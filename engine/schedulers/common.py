"""Machinery every scheduler shares: queues, admission, preemption by recompute, and `update`."""

from __future__ import annotations

from abc import abstractmethod
from collections import deque
from collections.abc import Iterator
from dataclasses import replace

from adaptive_sarathi.engine.batch import BlockTable, SamplingHistory, ScheduledBatch, ScheduledChunk, StepResult
from adaptive_sarathi.engine.budget import StepBudget
from adaptive_sarathi.engine.block_hash import extend_block_hashes
from adaptive_sarathi.engine.block_manager import BlockManager
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.request import FinishReason, Request, RequestStatus, in_prefill
from adaptive_sarathi.engine.schedulers.base import RequestUpdate, Scheduler


class StepBuilder:
    """The batch of one step under construction, with its budget and the time it is built at."""

    def __init__(self, budget: StepBudget, now: float) -> None:
        self.budget = budget
        self.now = now
        self.batch = ScheduledBatch()
        self.scheduled_ids: set[str] = set()
        self.num_tokens = 0
        self._num_prefill_chunks = 0

    @property
    def remaining(self) -> int:
        """Tokens left in the budget (0 once a step went over it, which only some policies allow)."""
        return max(0, self.budget.token_budget - self.num_tokens)

    def add(self, chunk: ScheduledChunk) -> None:
        """Append `chunk`, keeping the batch's decodes before its prefill chunks: a decode can
        come after them when a preempted request is readmitted with all but its last token
        cached."""
        if chunk.is_prefill:
            self._num_prefill_chunks += 1
            self.batch.chunks.append(chunk)
        elif self._num_prefill_chunks:
            self.batch.chunks.insert(len(self.batch.chunks) - self._num_prefill_chunks, chunk)
        else:
            self.batch.chunks.append(chunk)
        self.scheduled_ids.add(chunk.request_id)
        self.num_tokens += len(chunk.token_ids)


class QueueScheduler(Scheduler):
    """A waiting queue, a running list and a BlockManager; subclasses only pick each step's chunks.

    Requests wait for their arrival_time in arrival order (a simulator adds them ahead of time),
    then in the waiting queue by TTFT deadline (Request.ttft_deadline_s, earliest first; equal
    deadlines, e.g. none at all, keep arrival order: FCFS); preempted requests go back to its
    front. A step budget with `relegate_before_s` moves never-scheduled requests whose deadline is
    before it (they can no longer meet it) to a late queue, served in deadline order only when no
    other arrived request waits: under overload the requests that can still meet their deadline
    go first, instead of every request missing behind the late ones. The running list is ordered
    by TBT target, tightest first, then by admission (plain admission order when no request has
    a target); preemption takes victims from its tail, so when the KV cache runs out the
    loosest class's newest request is recomputed first and an interactive decode is the last.

    Prefix caching (the block manager's enable_caching): an admission starts the request after the
    longest run of its full blocks already cached (`_prefix_hit`), counting those tokens as
    computed; the last token is always left to compute, so that the step yields its logits.
    Token budgets and chunk limits apply to the uncached rest. Blocks are committed to the cache
    as `update` sees them fully computed.

    The context window is `max_context_len` = min(max_model_len, the tokens the KV cache can hold
    beyond the watermark), so that any single request always fits once others are preempted.
    """

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        if block_manager.block_size != config.block_size:
            raise ValueError(
                f"BlockManager.block_size={block_manager.block_size} differs from "
                f"SchedulerConfig.block_size={config.block_size}: build both from the same value")
        self.config = config
        self._block_manager = block_manager
        self._block_size = block_manager.block_size
        self._caching = block_manager.enable_caching
        usable_blocks = block_manager.num_total_blocks - block_manager.watermark_blocks
        self.max_context_len = min(config.max_model_len, usable_blocks * block_manager.block_size)
        self._future: deque[Request] = deque()  # not arrived yet (as of the last call that knew the time)
        self._waiting: deque[Request] = deque()  # arrived: preempted ones first, then by TTFT deadline
        self._late: deque[Request] = deque()  # relegated (see the class docstring), by deadline
        self._running: list[Request] = []
        self._requests: dict[str, Request] = {}
        self._last_batch = ScheduledBatch()
        # Immutable copies of block tables, rebuilt only when a table grows (every block_size
        # tokens of a decode) instead of copied every step; dropped when the blocks are freed.
        # Each is a BlockTable, so input preparation also converts it to an array only then.
        self._block_tables: dict[str, BlockTable] = {}

    # -- the Scheduler interface -------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue `request` (status WAITING) to wait for its arrival_time.

        Raises ValueError, queueing nothing, on a duplicate id, a request already in progress,
        or a prompt that is empty or longer than `max_context_len`.
        """
        rid = request.request_id
        if rid in self._requests:
            raise ValueError(f"request_id={rid!r} is already queued or running: use a unique id")
        if request.status is not RequestStatus.WAITING or request.num_computed_tokens or request.output_token_ids:
            raise ValueError(f"request {rid!r} is not fresh: add a new Request object")
        if not 1 <= request.num_prompt_tokens <= self.max_context_len:
            raise ValueError(
                f"request {rid!r} has a prompt of {request.num_prompt_tokens} tokens: use 1 to "
                f"{self.max_context_len} (max_model_len={self.config.max_model_len}, KV cache of "
                f"{self._block_manager.num_total_blocks} blocks of {self._block_manager.block_size} tokens)")
        if self._caching:
            # Hashed and looked up here, between steps: in a step, a waiting request's hit is
            # only refreshed (BlockManager.refresh_hit).
            self._block_hashes(request, request.num_prompt_tokens // self._block_size)
            self._prefix_hit(request)
        i = len(self._future)
        while i > 0 and self._future[i - 1].arrival_time > request.arrival_time:
            i -= 1
        self._future.insert(i, request)
        self._requests[rid] = request

    def schedule(self, budget: StepBudget, now: float) -> ScheduledBatch:
        """Pick this step's chunks (see Scheduler.schedule). The batch is remembered for `update`,
        which must be called before the next `schedule`."""
        self._take_arrivals(now)
        step = StepBuilder(budget, now)
        if budget.relegate_before_s is not None:
            step.batch.relegated_ids.extend(self._relegate(budget.relegate_before_s))
        self._fill(step)
        self._last_batch = step.batch
        return step.batch

    def update(self, result: StepResult, now: float) -> list[RequestUpdate]:
        """Apply `result` to the last scheduled batch (see Scheduler.update).

        Chunks of requests finished or aborted since `schedule` are skipped. Raises KeyError if
        `result` lacks the token of a chunk with sample=True.
        """
        batch, self._last_batch = self._last_batch, ScheduledBatch()
        updates = []
        requests, sampled, running = self._requests, result.sampled_token_ids, RequestStatus.RUNNING
        bs = self._block_size
        for chunk in batch.chunks:
            request = requests.get(chunk.request_id)
            if request is None or request.status is not running:
                continue
            request.num_computed_tokens += len(chunk.token_ids)
            # A chunk that fills a block makes it shareable: cache it before a finish frees it.
            if self._caching and request.num_computed_tokens // bs > chunk.start_position // bs:
                self._commit(request)
            if not chunk.sample:
                continue
            token = sampled[chunk.request_id]
            request.output_token_ids.append(token)
            timeline = request.timeline
            if timeline.first_token_time is None:
                timeline.first_token_time = now
            timeline.token_times.append(now)
            reason = self._stop_reason(request, token)
            if reason is not None:
                self._finish(request, reason, now)
            updates.append(RequestUpdate(request.request_id, [token], reason is not None, reason))
        return updates

    def finish_request(self, request_id: str, reason: FinishReason, now: float) -> bool:
        """End a waiting or running request (see Scheduler.finish_request)."""
        request = self._requests.get(request_id)
        if request is None:
            return False
        self._finish(request, reason, now)
        return True

    # -- queries -----------------------------------------------------------------------------

    @property
    def block_manager(self) -> BlockManager:
        return self._block_manager

    @property
    def num_waiting(self) -> int:
        """Waiting requests, those not arrived yet included."""
        return len(self._future) + len(self._waiting) + len(self._late)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_decodes(self) -> int:
        """Running requests whose next step is a single decode token."""
        return sum(not r.is_prefill for r in self._running)

    @property
    def waiting(self) -> tuple[Request, ...]:
        """A snapshot of the waiting requests in the order they would be admitted: the queue, the
        late queue, then those not arrived yet."""
        return (*self._waiting, *self._late, *self._future)

    def iter_arrived_waiting(self, now: float) -> Iterator[Request]:
        """The waiting requests that have arrived by `now`, in the order they would be admitted,
        without copying the queues (they can hold a whole simulated workload); the scheduler must
        not change while the iterator is in use. Moves the arrived ones into the waiting queue
        first, which changes no answer of the scheduler's."""
        self._take_arrivals(now)
        yield from self._waiting
        yield from self._late

    @property
    def running(self) -> tuple[Request, ...]:
        """A snapshot of the running list, in its order (see the class docstring)."""
        return tuple(self._running)

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    def get_request(self, request_id: str) -> Request | None:
        """The unfinished request with this id, or None."""
        return self._requests.get(request_id)

    def next_arrival_time(self, now: float | None = None) -> float | None:
        """Earliest arrival_time among waiting requests that arrive after `now` (all waiting
        requests when now is None); None if there is none. Lets a simulator jump its clock."""
        times = [r.arrival_time for r in self._future if now is None or r.arrival_time > now]
        return min(times, default=None)

    def check_invariants(self) -> None:
        """Raise AssertionError if queues, statuses and KV blocks disagree. Mutates nothing."""
        bm = self._block_manager
        bm.check_invariants(set(self._requests))
        waiting_ids = [r.request_id for r in (*self._future, *self._waiting, *self._late)]
        running_ids = [r.request_id for r in self._running]
        assert len(set(waiting_ids)) == len(waiting_ids), "a request is queued twice"
        assert len(set(running_ids)) == len(running_ids), "a request is running twice"
        both = set(waiting_ids) & set(running_ids)
        assert not both, f"requests {sorted(both)} are both waiting and running"
        assert set(waiting_ids) | set(running_ids) == set(self._requests), "a request is lost"
        assert len(running_ids) <= self.config.max_num_seqs, "more running requests than max_num_seqs"
        for rid, table in self._block_tables.items():
            assert list(table) == bm.block_table(rid), f"cached block table of {rid!r} is stale"
        assert all(bm.num_owned_blocks(rid) == 0 for rid in set(self._requests) - set(self._block_tables)), (
            "a request owns blocks without a cached block table")
        for r in (*self._late, *self._future):
            assert r.timeline.first_scheduled_time is None, f"late or future request {r.request_id!r} was scheduled"
        arrivals = [r.arrival_time for r in self._future]
        assert arrivals == sorted(arrivals), "requests not arrived yet are out of arrival order"
        started = [r.timeline.first_scheduled_time is not None for r in self._waiting]
        assert started == sorted(started, reverse=True), "a preempted request waits behind a new one"
        deadlines = [r.ttft_deadline_s for r, s in zip(self._waiting, started) if not s]
        assert deadlines == sorted(deadlines), "the waiting queue is out of deadline order"
        bs = self._block_size
        for r in (*self._future, *self._waiting, *self._late):
            assert r.status is RequestStatus.WAITING, f"waiting request {r.request_id!r} is {r.status}"
            assert r.num_computed_tokens == 0, f"waiting request {r.request_id!r} has computed tokens"
            assert bm.num_owned_blocks(r.request_id) == 0, f"waiting request {r.request_id!r} owns blocks"
            if r.prefix_hit is not None:
                # Its kept hit, refreshed (on a copy), must be what a full lookup finds now.
                h = r.prefix_hit
                num_blocks = (r.num_tokens - 1) // bs
                if h.max_blocks == num_blocks and len(r.block_hashes) >= num_blocks:
                    copy = bm.refresh_hit(replace(h, blocks=list(h.blocks)), r.block_hashes, num_blocks)
                    assert copy.blocks == bm.match(r.block_hashes, num_blocks), (
                        f"the kept prefix hit of waiting request {r.request_id!r} is stale")
        bs = self._block_size
        for r in self._running:
            # The cache's content addresses agree with the tokens: every hashed block a running
            # request holds among its computed full blocks carries the hash of those tokens.
            table = bm.block_table(r.request_id)
            assert len(r.block_hashes) * bs <= r.num_tokens, f"request {r.request_id!r} hashes blocks it lacks"
            for i in range(min(r.num_computed_tokens // bs, len(r.block_hashes))):
                h = bm.block_hash(table[i])
                assert h is None or h == r.block_hashes[i], (
                    f"block {table[i]} of request {r.request_id!r} is cached under another content's hash")
            if self._caching:
                assert bm.num_committed_blocks(r.request_id) <= r.num_computed_tokens // bs, (
                    f"request {r.request_id!r} committed blocks it has not computed")
        for r in self._running:
            assert r.status is RequestStatus.RUNNING, f"running request {r.request_id!r} is {r.status}"
            assert 0 < r.num_pending_tokens, f"running request {r.request_id!r} has nothing to compute"
            assert bm.num_owned_blocks(r.request_id) >= bm.num_blocks_for(r.num_computed_tokens), (
                f"running request {r.request_id!r} owns too few blocks for its computed tokens")

    # -- for policies ------------------------------------------------------------------------

    @abstractmethod
    def _fill(self, step: StepBuilder) -> None:
        """Add this step's chunks to `step`, through `_schedule_running` and `_admit`."""

    def _iter_running(self) -> Iterator[Request]:
        """Running requests in the running list's order, skipping those preempted while iterating."""
        running = RequestStatus.RUNNING  # looked up once: an enum member lookup costs ~60 ns
        for request in list(self._running):
            if request.status is running:
                yield request

    def _admissible_head(self) -> Request | None:
        """The request to admit next when a running slot is free: the waiting queue's head, else
        the late queue's; None when both are empty. Only arrived requests are in them: schedule()
        took this step's arrivals before filling it."""
        if len(self._running) >= self.config.max_num_seqs:
            return None
        if self._waiting:
            return self._waiting[0]
        return self._late[0] if self._late else None

    def _take_arrivals(self, now: float) -> None:
        """Move the requests arrived by `now` into the waiting queue, each behind those with an
        earlier or equal deadline (and behind every preempted request)."""
        future, waiting = self._future, self._waiting
        while future and future[0].arrival_time <= now:
            request = future.popleft()
            i = len(waiting)
            while (i > 0 and waiting[i - 1].timeline.first_scheduled_time is None
                   and waiting[i - 1].ttft_deadline_s > request.ttft_deadline_s):
                i -= 1
            waiting.insert(i, request)

    def _relegate(self, before_s: float) -> list[str]:
        """Move never-scheduled requests whose deadline is before `before_s` to the late queue;
        returns their ids."""
        moved: list[str] = []
        waiting, i = self._waiting, 0
        while i < len(waiting):
            request = waiting[i]
            if request.timeline.first_scheduled_time is not None:  # preempted: it has started
                i += 1
            elif request.ttft_deadline_s < before_s:
                del waiting[i]
                self._late.append(request)
                moved.append(request.request_id)
            else:
                break  # later ones are due later still
        return moved

    def cached_prefix_tokens(self, request: Request) -> int:
        """Tokens of a waiting request that admitting it now would find in the prefix cache
        (0 with caching off): its pending tokens less these are the work it brings. Refreshes
        the request's kept hit (cheap when the cache barely changed); changes nothing the
        scheduler will schedule."""
        return len(self._prefix_hit(request)) * self._block_size if self._caching else 0

    def _prefix_hit(self, request: Request) -> list[int]:
        """The cached blocks a waiting request would start with if admitted now: the longest run
        of its full blocks in the cache, leaving at least its last token to compute ([] with
        caching off). Kept on the request (request.prefix_hit) and refreshed, so a request
        waiting several steps is matched in full once. The list belongs to that hit: read it,
        or pass it to `_admit` before the cache changes. Mutates only request.block_hashes and
        request.prefix_hit."""
        if not self._caching:
            return []
        num_blocks = (request.num_tokens - 1) // self._block_size
        hit = request.prefix_hit = self._block_manager.refresh_hit(
            request.prefix_hit, self._block_hashes(request, num_blocks), num_blocks)
        return hit.blocks

    def _commit(self, request: Request) -> None:
        """Offer the running request's fully computed blocks to the prefix cache."""
        num_blocks = request.num_computed_tokens // self._block_size
        self._block_manager.commit(request.request_id, self._block_hashes(request, num_blocks), num_blocks)

    def _block_hashes(self, request: Request, num_blocks: int) -> list[bytes]:
        """request.block_hashes, extended to cover at least its first `num_blocks` full blocks
        (each block hashed once per request)."""
        bs = self._block_size
        hashes = request.block_hashes
        if len(hashes) < num_blocks:
            extend_block_hashes(hashes, request.token_ids_slice(len(hashes) * bs, num_blocks * bs), bs)
        return hashes

    def _fits(self, request: Request, num_tokens: int, cached_blocks: list[int]) -> bool:
        """Whether admitting `request` with its `cached_blocks` (a `_prefix_hit`) and a chunk of
        `num_tokens` after them leaves the watermark free."""
        total = len(cached_blocks) * self._block_size + num_tokens
        return self._block_manager.can_allocate(request.request_id, total, use_watermark=True,
                                                cached_blocks=cached_blocks)

    def _admit(self, step: StepBuilder, request: Request, num_tokens: int, cached_blocks: list[int]) -> None:
        """Move `_admissible_head` to running, its `cached_blocks` (its `_prefix_hit`, unchanged
        since) counted as computed, with a first chunk of `num_tokens` after them; the caller
        checked `_fits`."""
        if self._waiting and self._waiting[0] is request:
            self._waiting.popleft()
        else:
            assert self._late and self._late[0] is request, "only a queue head is admitted"
            self._late.popleft()
        num_cached = len(cached_blocks) * self._block_size
        request.num_computed_tokens = num_cached
        table = self._allocate(request.request_id, num_cached + num_tokens, cached_blocks)
        request.prefix_hit = None  # running now; a preemption matches it afresh
        request.status = RequestStatus.RUNNING
        if request.timeline.first_scheduled_time is None:
            request.timeline.first_scheduled_time = step.now
            request.num_cached_tokens = num_cached
        if self._caching:
            step.batch.num_cache_query_tokens += request.num_tokens
            step.batch.num_cached_tokens += num_cached
        self._insert_running(request)
        self._add_chunk(step, request, num_tokens, table)

    def _insert_running(self, request: Request) -> None:
        """Put a newly admitted request behind every running one whose TBT target is as tight or
        tighter (the running list's order, see the class docstring)."""
        running, target = self._running, request.tbt_target_s
        i = len(running)
        while i > 0 and running[i - 1].tbt_target_s > target:
            i -= 1
        running.insert(i, request)

    def _admit_whole_prompts(self, step: StepBuilder) -> None:
        """Admit arrived requests FCFS, each with all its pending tokens past its cached prefix,
        while the step stays in the token budget, stopping at the first that does not fit. The step's first prompt is
        admitted whatever its size, so that a prompt longer than the budget is never starved."""
        first = True
        while (request := self._admissible_head()) is not None:
            cached = self._prefix_hit(request)
            n = request.num_pending_tokens - len(cached) * self._block_size
            if not first and step.num_tokens + n > step.budget.token_budget:
                break
            if not self._fits(request, n, cached):
                break
            self._admit(step, request, n, cached)
            first = False

    def _schedule_running(self, step: StepBuilder, request: Request, num_tokens: int) -> bool:
        """Give a running request a chunk, preempting others (tail first) until its blocks fit.

        Returns False when the request had to preempt itself and got no chunk.
        """
        assert request.request_id not in step.scheduled_ids, "a request is scheduled twice in a step"
        total = request.num_computed_tokens + num_tokens
        table = self._block_tables.get(request.request_id)
        # Most steps the blocks a request owns already cover its chunk (a decode needs a new block
        # only every block_size tokens); the block manager is consulted only when they do not.
        if table is None or len(table) * self._block_manager.block_size < total:
            while not self._block_manager.can_allocate(request.request_id, total, use_watermark=False):
                victim = next(r for r in reversed(self._running) if r.request_id not in step.scheduled_ids)
                self._preempt(step, victim)
                if victim is request:
                    return False
            table = self._allocate(request.request_id, total)
        self._add_chunk(step, request, num_tokens, table)
        return True

    def _schedule_decode(self, step: StepBuilder, request: Request) -> bool:
        """`_schedule_running(step, request, 1)`, taking a shortcut in the common case of a step:
        the request decodes (its one pending token is its last output) and already owns the block
        that token goes in. Returns what `_schedule_running` would."""
        outputs = request.output_token_ids
        position = request.num_computed_tokens
        table = self._block_tables.get(request.request_id)
        if (table is None or len(table) * self._block_size <= position
                or in_prefill(len(outputs), len(request.prompt_token_ids) + len(outputs) - position)):
            return self._schedule_running(step, request, 1)
        assert request.request_id not in step.scheduled_ids, "a request is scheduled twice in a step"
        # Positional, in field order: the last output, sampled, not a prefill.
        params = request.sampling_params
        step.add(ScheduledChunk(request.request_id, (outputs[-1],), position, table, True, params,
                                len(outputs), False, _history(request) if params.needs_history else None))
        return True

    def _preempt(self, step: StepBuilder, request: Request) -> None:
        """Free the request's blocks and requeue it at the front; it will recompute its tokens."""
        self._free_blocks(request.request_id)
        request.num_computed_tokens = 0
        request.status = RequestStatus.WAITING
        request.num_preemptions += 1
        self._running.remove(request)
        self._waiting.appendleft(request)
        step.batch.preempted_ids.append(request.request_id)

    # -- internals ---------------------------------------------------------------------------

    # Every allocation and free goes through these two, so that `_block_tables` always equals
    # the block manager's tables.
    def _allocate(self, request_id: str, num_tokens_total: int, cached_blocks: list[int] = ()) -> BlockTable:
        """Grow the request's blocks (starting a new table with `cached_blocks`; the caller
        checked they fit); returns its block table."""
        self._block_manager.allocate(request_id, num_tokens_total, cached_blocks)
        table = self._block_tables[request_id] = BlockTable(self._block_manager.block_table(request_id))
        return table

    def _free_blocks(self, request_id: str) -> None:
        self._block_manager.free(request_id)
        self._block_tables.pop(request_id, None)

    def _add_chunk(self, step: StepBuilder, request: Request, num_tokens: int, block_table: BlockTable) -> None:
        start = request.num_computed_tokens
        end = start + num_tokens
        outputs = request.output_token_ids
        num_all = len(request.prompt_token_ids) + len(outputs)
        # Positional, in field order: this runs for every chunk of every step.
        sample = end == num_all
        params = request.sampling_params
        step.add(ScheduledChunk(request.request_id, tuple(request.token_ids_slice(start, end)), start, block_table,
                                sample, params, len(outputs), in_prefill(len(outputs), num_all - start),
                                _history(request) if sample and params.needs_history else None))

    def _unqueue(self, request: Request) -> None:
        """Take a waiting request out of whichever queue holds it (found by identity)."""
        for queue in (self._waiting, self._late, self._future):
            for i, queued in enumerate(queue):
                if queued is request:
                    del queue[i]
                    return
        raise AssertionError(f"waiting request {request.request_id!r} is in no queue")

    def _stop_reason(self, request: Request, token: int) -> FinishReason | None:
        params = request.sampling_params
        # Before min_tokens outputs a stop id does not end the request (the sampler masks them;
        # executors without logits, such as the simulator's, may still produce one).
        if len(request.output_token_ids) > params.min_tokens:
            if token in request.eos_token_ids and not params.ignore_eos:
                return FinishReason.STOP
            if token in params.stop_token_ids:
                return FinishReason.STOP
        if len(request.output_token_ids) >= params.max_tokens:
            return FinishReason.LENGTH
        if len(request.prompt_token_ids) + len(request.output_token_ids) >= self.max_context_len:
            return FinishReason.LENGTH
        return None

    def _finish(self, request: Request, reason: FinishReason, now: float) -> None:
        if request.status is RequestStatus.RUNNING:
            self._running.remove(request)
        else:
            self._unqueue(request)
        self._free_blocks(request.request_id)
        del self._requests[request.request_id]
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        request.timeline.finished_time = now


def _history(request: Request) -> SamplingHistory:
    params = request.sampling_params
    eos = () if params.ignore_eos else request.eos_token_ids
    return SamplingHistory(request.prompt_token_ids, request.output_token_ids, (*eos, *params.stop_token_ids),
                           request.json_mode)
