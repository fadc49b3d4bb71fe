"""Paged KV cache bookkeeping: which requests hold which fixed-size block, and which full blocks
are cached by content for reuse (prefix caching). CPU only."""

from __future__ import annotations

from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

# Evictions remembered for `refresh_hit` (block id, chain position each): a hit last checked
# before the oldest one kept is matched afresh. Every waiting request is refreshed each step, so
# only a step that evicts more than this many blocks forces full matches.
EVICTION_LOG_LEN = 4096


@dataclass(slots=True)
class PrefixHit:
    """A waiting request's longest cached prefix as of one point of the manager's history:
    `blocks` are the cached block ids of its first len(blocks) blocks (at most `max_blocks`),
    checked when the manager had done `num_evictions` evictions and `num_commits` commits.
    Owned by the request's scheduler; `BlockManager.refresh_hit` brings it up to date."""

    blocks: list[int]
    max_blocks: int
    num_evictions: int
    num_commits: int


class BlockManager:
    """Owns every KV block id in [0, num_blocks) and each request's block table.

    A request's table covers token positions [0, len(table) * block_size). Tables only grow while
    the request lives and are released whole by `free`.

    Prefix caching (enable_caching): a full block whose KV is computed can be `commit`ted under
    its content hash (engine.block_hash). A block is held by reference: several tables may list
    one cached block (its ref count is their number), and a table may start with cached blocks
    found by `match`. A cached block whose last holder frees it stays in the hash index, in an
    LRU of evictable blocks, until an allocation needs it; only then is its hash forgotten.
    Evictable blocks count as free. Blocks are never written through a shared reference: the
    scheduler computes only positions past a request's cached prefix.

    Free blocks without a hash are handed out first, FIFO: a fresh manager allocates 0, 1, 2, ...
    and a freed uncached block goes to the back of the queue, so allocation order is
    deterministic and easy to read in tests. Only when none is left is the least recently freed
    cached block evicted.

    watermark_blocks: blocks that admissions of new requests (`use_watermark=True`) must leave
    free, so that running requests can grow a little before anyone is preempted.
    """

    def __init__(self, num_blocks: int, block_size: int, watermark_blocks: int = 0, *,
                 enable_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks={num_blocks!r} is invalid: use an integer >= 1")
        if block_size < 1:
            raise ValueError(f"block_size={block_size!r} is invalid: use an integer >= 1")
        if not 0 <= watermark_blocks < num_blocks:
            raise ValueError(
                f"watermark_blocks={watermark_blocks!r} is invalid: use an integer in [0, {num_blocks})")
        self.block_size = block_size
        self.watermark_blocks = watermark_blocks
        self.enable_caching = enable_caching
        self._num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))  # free, no hash
        self._evictable: OrderedDict[int, None] = OrderedDict()  # free, hashed; least recently freed first
        self._tables: dict[str, list[int]] = {}
        self._ref = [0] * num_blocks  # tables listing each block
        self._hash: list[bytes | None] = [None] * num_blocks  # each block's content hash, if cached
        self._index: dict[bytes, int] = {}  # content hash -> the cached block holding that content
        self._committed: dict[str, int] = {}  # leading blocks of a table already cached or declined
        # Chain position (block index within its sequence) of each cached block, for the log.
        self._position = array("i", bytes(4 * num_blocks))
        self._eviction_log: list[tuple[int, int]] = []  # (block, chain position) per eviction, oldest first
        self._log_start = 0  # evictions done before _eviction_log[0]
        self.num_evictions = 0  # cached blocks whose hash was dropped to reuse the block
        self.num_commits = 0  # blocks added to the hash index

    @property
    def num_total_blocks(self) -> int:
        return self._num_blocks

    @property
    def num_free_blocks(self) -> int:
        """Blocks no table holds: unhashed free ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks in the hash index (held or evictable)."""
        return len(self._index)

    @property
    def num_admissible_free_blocks(self) -> int:
        """Free blocks an admission may take: those above `watermark_blocks` (the rule
        `can_allocate(..., use_watermark=True)` applies); never negative."""
        return max(0, self.num_free_blocks - self.watermark_blocks)

    @property
    def num_admissible_blocks(self) -> int:
        """Blocks admissions may ever fill: all but `watermark_blocks`."""
        return self._num_blocks - self.watermark_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks held by some request, in [0, 1] (evictable cached blocks are free)."""
        return 1.0 - self.num_free_blocks / self._num_blocks

    def num_blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` token positions."""
        return -(-num_tokens // self.block_size)

    def num_owned_blocks(self, request_id: str) -> int:
        return len(self._tables.get(request_id, ()))

    def num_new_blocks(self, request_id: str, num_tokens_total: int, cached_blocks: Sequence[int] = ()) -> int:
        """Free blocks `allocate(request_id, num_tokens_total, cached_blocks)` would take (0 if
        already covered): new blocks past the table (or past `cached_blocks`), plus the cached
        blocks that are evictable now (taking them removes them from the free count)."""
        have = self.num_owned_blocks(request_id) or len(cached_blocks)
        need = max(0, self.num_blocks_for(num_tokens_total) - have)
        if cached_blocks and request_id not in self._tables:
            ref = self._ref
            need += sum(ref[b] == 0 for b in cached_blocks)
        return need

    def can_allocate(self, request_id: str, num_tokens_total: int, *, use_watermark: bool,
                     cached_blocks: Sequence[int] = ()) -> bool:
        """Whether the request's table can grow to cover `num_tokens_total` positions (starting
        with `cached_blocks`, a `match` result, when it has no table yet).

        With use_watermark (admission of a new or preempted request) the allocation must also
        leave `watermark_blocks` free. Mutates nothing.
        """
        need = self.num_new_blocks(request_id, num_tokens_total, cached_blocks)
        return need == 0 or need <= (self.num_admissible_free_blocks if use_watermark else self.num_free_blocks)

    def allocate(self, request_id: str, num_tokens_total: int, cached_blocks: Sequence[int] = ()) -> None:
        """Grow the request's table (created if absent) to cover `num_tokens_total` positions.

        A request without a table starts it with `cached_blocks` (what `match` returned for its
        tokens, unchanged since: no allocation in between), whose ref counts go up (evictable
        ones leave the LRU); it must not pass them once it has a table. New blocks come from the
        unhashed free queue, then by evicting the least recently freed cached blocks.
        Mutates the free lists, ref counts, the index (evictions) and the table. Raises
        RuntimeError, changing nothing, when too few blocks are free: check `can_allocate` first.
        """
        if cached_blocks and request_id in self._tables:
            raise RuntimeError(f"request {request_id!r} already has a block table: cached blocks only start one")
        need = self.num_new_blocks(request_id, num_tokens_total, cached_blocks)
        if need > self.num_free_blocks:
            raise RuntimeError(
                f"cannot allocate {need} KV blocks for request {request_id!r} "
                f"({num_tokens_total} tokens): only {self.num_free_blocks} free; call can_allocate first")
        if need == 0 and not cached_blocks:
            return
        table = self._tables.get(request_id)
        ref = self._ref
        if table is None:
            table = self._tables[request_id] = []
            evictable = self._evictable
            for block in cached_blocks:
                if ref[block] == 0:
                    del evictable[block]
                ref[block] += 1
            table.extend(cached_blocks)
            self._committed[request_id] = len(cached_blocks)
        for _ in range(self.num_blocks_for(num_tokens_total) - len(table)):
            block = self._take_free()
            ref[block] = 1
            table.append(block)

    def _take_free(self) -> int:
        if self._free:
            return self._free.popleft()
        block, _ = self._evictable.popitem(last=False)
        del self._index[self._hash[block]]
        self._hash[block] = None
        self.num_evictions += 1
        log = self._eviction_log
        log.append((block, self._position[block]))
        if len(log) > 2 * EVICTION_LOG_LEN:
            del log[:EVICTION_LOG_LEN]
            self._log_start += EVICTION_LOG_LEN
        return block

    def match(self, block_hashes: Sequence[bytes], max_blocks: int) -> list[int]:
        """The cached blocks holding the longest prefix of block_hashes[:max_blocks] (a sequence's
        block hashes from block 0), in order; [] when caching is off. Mutates nothing."""
        if not self.enable_caching or not max_blocks or not block_hashes:
            return []
        get = self._index.get
        if get(block_hashes[0]) is None:  # a prompt that shares nothing: the common miss, answered at once
            return []
        # Every lookup in one C-level pass, cut at the first miss: admissions run this every step
        # their request waits at the head, and a long prompt's hit is hundreds of blocks.
        blocks = list(map(get, islice(block_hashes, max_blocks)))
        try:
            del blocks[blocks.index(None):]
        except ValueError:
            pass
        return blocks

    def refresh_hit(self, hit: PrefixHit | None, block_hashes: Sequence[bytes], max_blocks: int) -> PrefixHit:
        """`hit` (a waiting sequence's earlier answer for these `block_hashes` and `max_blocks`,
        or None) brought up to date: what `match(block_hashes, max_blocks)` returns now, as a
        PrefixHit. Cheap when little changed: an eviction since the last check cuts the hit at
        the evicted block's position if it held that block, and only after a commit are the
        blocks past the hit probed (one probe when nothing new was cached there). A hash names
        one block until that block is evicted, so those two events are the only ways a hit
        changes. Falls back to a full `match` for None, another max_blocks, or a hit older than
        the eviction log. Mutates `hit` (and returns it) or returns a new one; nothing else."""
        if hit is None or hit.max_blocks != max_blocks or hit.num_evictions < self._log_start:
            return PrefixHit(self.match(block_hashes, max_blocks), max_blocks, self.num_evictions, self.num_commits)
        blocks = hit.blocks
        if hit.num_evictions != self.num_evictions:
            k = len(blocks)
            if k:
                for block, position in islice(self._eviction_log, hit.num_evictions - self._log_start, None):
                    if position < k and blocks[position] == block:
                        k = position
                del blocks[k:]
            hit.num_evictions = self.num_evictions
        if hit.num_commits != self.num_commits:
            k, end, get = len(blocks), min(max_blocks, len(block_hashes)), self._index.get
            while k < end and (block := get(block_hashes[k])) is not None:
                blocks.append(block)
                k += 1
            hit.num_commits = self.num_commits
        return hit

    def commit(self, request_id: str, block_hashes: Sequence[bytes], num_blocks: int) -> None:
        """Cache the request's first `num_blocks` table blocks, whose KV the caller says is
        computed (full blocks only): block i gets hash block_hashes[i], for each i not committed
        before. A block whose hash is already cached (another request computed the same content
        meanwhile) stays uncached. Mutates the index; a no-op when caching is off or the request
        has no table."""
        if not self.enable_caching or request_id not in self._tables:
            return
        table = self._tables[request_id]
        first = self._committed[request_id]
        last = min(num_blocks, len(block_hashes), len(table))
        index, hashes, position = self._index, self._hash, self._position
        added = len(index)
        for i in range(first, last):
            h = block_hashes[i]
            if h not in index:
                block = table[i]
                index[h] = block
                hashes[block] = h
                position[block] = i
        self.num_commits += len(index) - added
        if last > first:
            self._committed[request_id] = last

    def free(self, request_id: str) -> None:
        """Release every block of the request and forget its table; a no-op for unknown ids.
        Blocks no other table holds become free: cached ones to the most recent end of the LRU
        (the table's tail first, so a prefix is evicted from its end), others to the free queue."""
        table = self._tables.pop(request_id, None)
        if table is None:
            return
        del self._committed[request_id]
        ref, hashes = self._ref, self._hash
        cached = []
        for block in table:
            ref[block] -= 1
            if ref[block] == 0:
                if hashes[block] is None:
                    self._free.append(block)
                else:
                    cached.append(block)
        for block in reversed(cached):
            self._evictable[block] = None

    def block_table(self, request_id: str) -> list[int]:
        """A copy of the request's block ids in position order ([] if it owns none)."""
        return list(self._tables.get(request_id, ()))

    def ref_count(self, block: int) -> int:
        """How many tables hold block `block` (0: free or evictable)."""
        return self._ref[block]

    def block_hash(self, block: int) -> bytes | None:
        """The content hash block `block` is cached under, or None."""
        return self._hash[block]

    def num_committed_blocks(self, request_id: str) -> int:
        """Leading blocks of the request's table that `commit` (or the cached start) has covered."""
        return self._committed.get(request_id, 0)

    def check_invariants(self, live_request_ids: set[str] | None = None) -> None:
        """Raise AssertionError if a block is free and held, listed twice by one table, lost or
        out of range, if a ref count differs from the tables listing the block, if the hash index
        and the blocks' hashes disagree (or an unhashed block is evictable, a hashed one in the
        plain free queue), or (when `live_request_ids` is given) if a request not in it holds
        blocks. Mutates nothing."""
        free = list(self._free)
        evictable = list(self._evictable)
        assert len(set(free)) == len(free), "a block is in the free queue twice"
        assert not set(free) & set(evictable), "a block is both in the free queue and evictable"
        counts = [0] * self._num_blocks
        for request_id, table in self._tables.items():
            assert table, f"request {request_id!r} has an empty block table"
            if live_request_ids is not None:
                assert request_id in live_request_ids, f"request {request_id!r} is not live but owns blocks"
            assert len(set(table)) == len(table), f"request {request_id!r} lists a block twice"
            assert 0 <= self._committed[request_id] <= len(table), f"commit count of {request_id!r} out of range"
            for block in table:
                assert 0 <= block < self._num_blocks, f"block id {block} is out of range"
                counts[block] += 1
        assert set(self._committed) == set(self._tables), "commit counts and tables name different requests"
        assert counts == self._ref, "a ref count differs from the number of tables listing the block"
        held = {b for b, n in enumerate(counts) if n}
        both = (set(free) | set(evictable)) & held
        assert not both, f"blocks {sorted(both)} are both free and owned"
        assert len(free) + len(evictable) + len(held) == self._num_blocks, (
            f"{len(free)} free + {len(evictable)} evictable + {len(held)} held != {self._num_blocks} total blocks")
        assert all(0 <= b < self._num_blocks for b in (*free, *evictable)), "a block id is out of range"
        assert all(self._hash[b] is None for b in free), "a block in the free queue still has a hash"
        assert all(self._hash[b] is not None for b in evictable), "an evictable block has no hash"
        hashed = {b: h for b, h in enumerate(self._hash) if h is not None}
        assert len(hashed) == len(self._index), "the hash index and the blocks' hashes differ in size"
        for h, block in self._index.items():
            assert hashed.get(block) == h, f"the hash index names block {block} under a hash it does not have"
        assert self.enable_caching or not self._index, "blocks are cached with caching off"
        assert self._log_start + len(self._eviction_log) == self.num_evictions, "the eviction log lost an eviction"
