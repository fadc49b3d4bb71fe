"""Paged KV cache bookkeeping: which request owns which fixed-size block. CPU only."""

from __future__ import annotations

from collections import deque


class BlockManager:
    """Owns every KV block id in [0, num_blocks) and each request's block table.

    A request's table covers token positions [0, len(table) * block_size). Tables only grow while
    the request lives and are released whole by `free`.

    Free ids are handed out FIFO: a fresh manager allocates 0, 1, 2, ... and a freed block goes
    to the back of the queue, so allocation order is deterministic and easy to read in tests.

    watermark_blocks: blocks that admissions of new requests (`use_watermark=True`) must leave
    free, so that running requests can grow a little before anyone is preempted.
    """

    def __init__(self, num_blocks: int, block_size: int, watermark_blocks: int = 0) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks={num_blocks!r} is invalid: use an integer >= 1")
        if block_size < 1:
            raise ValueError(f"block_size={block_size!r} is invalid: use an integer >= 1")
        if not 0 <= watermark_blocks < num_blocks:
            raise ValueError(
                f"watermark_blocks={watermark_blocks!r} is invalid: use an integer in [0, {num_blocks})")
        self.block_size = block_size
        self.watermark_blocks = watermark_blocks
        self._num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._tables: dict[str, list[int]] = {}

    @property
    def num_total_blocks(self) -> int:
        return self._num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_admissible_free_blocks(self) -> int:
        """Free blocks an admission may take: those above `watermark_blocks` (the rule
        `can_allocate(..., use_watermark=True)` applies); never negative."""
        return max(0, len(self._free) - self.watermark_blocks)

    @property
    def num_admissible_blocks(self) -> int:
        """Blocks admissions may ever fill: all but `watermark_blocks`."""
        return self._num_blocks - self.watermark_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks owned by some request, in [0, 1]."""
        return 1.0 - len(self._free) / self._num_blocks

    def num_blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` token positions."""
        return -(-num_tokens // self.block_size)

    def num_owned_blocks(self, request_id: str) -> int:
        return len(self._tables.get(request_id, ()))

    def num_new_blocks(self, request_id: str, num_tokens_total: int) -> int:
        """Blocks `allocate(request_id, num_tokens_total)` would add (0 if already covered)."""
        return max(0, self.num_blocks_for(num_tokens_total) - self.num_owned_blocks(request_id))

    def can_allocate(self, request_id: str, num_tokens_total: int, *, use_watermark: bool) -> bool:
        """Whether the request's table can grow to cover `num_tokens_total` positions.

        With use_watermark (admission of a new or preempted request) the allocation must also
        leave `watermark_blocks` free. Mutates nothing.
        """
        need = self.num_new_blocks(request_id, num_tokens_total)
        return need == 0 or need <= (self.num_admissible_free_blocks if use_watermark else len(self._free))

    def allocate(self, request_id: str, num_tokens_total: int) -> None:
        """Grow the request's table (created if absent) to cover `num_tokens_total` positions.

        Mutates the free queue and the table. Raises RuntimeError, changing nothing, when too few
        blocks are free: check `can_allocate` first.
        """
        need = self.num_new_blocks(request_id, num_tokens_total)
        if need > len(self._free):
            raise RuntimeError(
                f"cannot allocate {need} KV blocks for request {request_id!r} "
                f"({num_tokens_total} tokens): only {len(self._free)} free; call can_allocate first")
        if need == 0:
            return
        table = self._tables.setdefault(request_id, [])
        table.extend(self._free.popleft() for _ in range(need))

    def free(self, request_id: str) -> None:
        """Release every block of the request and forget its table; a no-op for unknown ids."""
        self._free.extend(self._tables.pop(request_id, ()))

    def block_table(self, request_id: str) -> list[int]:
        """A copy of the request's block ids in position order ([] if it owns none)."""
        return list(self._tables.get(request_id, ()))

    def check_invariants(self, live_request_ids: set[str] | None = None) -> None:
        """Raise AssertionError if a block is free and owned, owned twice, lost or out of range,
        or (when `live_request_ids` is given) owned by a request not in it. Mutates nothing."""
        free = list(self._free)
        assert len(set(free)) == len(free), "a block is in the free queue twice"
        owned: dict[int, str] = {}
        for request_id, table in self._tables.items():
            assert table, f"request {request_id!r} has an empty block table"
            if live_request_ids is not None:
                assert request_id in live_request_ids, f"request {request_id!r} is not live but owns blocks"
            for block in table:
                assert block not in owned, f"block {block} owned by {owned[block]!r} and {request_id!r}"
                owned[block] = request_id
        both = set(free) & owned.keys()
        assert not both, f"blocks {sorted(both)} are both free and owned"
        assert len(free) + len(owned) == self._num_blocks, (
            f"{len(free)} free + {len(owned)} owned != {self._num_blocks} total blocks")
        assert all(0 <= b < self._num_blocks for b in (*free, *owned)), "a block id is out of range"
