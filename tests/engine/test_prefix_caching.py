"""Prefix caching, step by step: the block manager's hash index, ref counts and LRU, and every
scheduler admitting requests after their cached prefix (no model, no GPU)."""

from __future__ import annotations

import pytest

from adaptive_sarathi.engine.batch import StepResult
from adaptive_sarathi.engine.block_hash import extend_block_hashes
from adaptive_sarathi.engine.block_manager import BlockManager
from adaptive_sarathi.engine.budget import StepBudget
from adaptive_sarathi.engine.config import SCHEDULER_NAMES, SchedulerConfig
from adaptive_sarathi.engine.request import FinishReason, Request
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import QueueScheduler, make_scheduler

BS = 4


def hashes(tokens: list[int], block_size: int = BS) -> list[bytes]:
    out: list[bytes] = []
    extend_block_hashes(out, tokens, block_size)
    return out


# -- hashing -----------------------------------------------------------------------------------

def test_block_hashes_chain_the_prefix():
    a = hashes([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert len(a) == 2 and all(len(h) == 16 for h in a)  # the partial third block is not hashed
    assert hashes([1, 2, 3, 4, 5, 6, 7, 8]) == a
    b = hashes([9, 2, 3, 4, 5, 6, 7, 8])
    assert b[0] != a[0] and b[1] != a[1], "block 1 holds the same tokens but after another prefix"
    grown = hashes([1, 2, 3, 4])
    extend_block_hashes(grown, [5, 6, 7, 8, 9], BS)  # incremental: the tokens after the hashed blocks
    assert grown == a
    assert hashes([1, 2, 3, 4], block_size=2) != hashes([1, 2, 3, 4])[:1] * 2


# -- the block manager ---------------------------------------------------------------------------

def test_committed_blocks_are_shared_by_reference_and_survive_their_owner():
    bm = BlockManager(num_blocks=6, block_size=BS)
    h = hashes(list(range(12)))
    bm.allocate("a", 12)
    bm.commit("a", h, 2)  # two blocks computed so far
    assert bm.match(h, 3) == [0, 1]
    assert bm.num_cached_blocks == 2
    bm.commit("a", h, 3)
    assert bm.match(h, 3) == [0, 1, 2] and bm.match(h, 2) == [0, 1]
    cached = bm.match(h, 2)
    assert bm.num_new_blocks("b", 10, cached) == 1
    bm.allocate("b", 10, cached)
    assert bm.block_table("b") == [0, 1, 3]
    assert [bm.ref_count(b) for b in range(6)] == [2, 2, 1, 1, 0, 0]
    bm.check_invariants({"a", "b"})
    bm.free("a")
    assert [bm.ref_count(b) for b in range(6)] == [1, 1, 0, 1, 0, 0]
    assert bm.num_free_blocks == 3  # block 2 is evictable, 4 and 5 plain free
    assert bm.match(h, 3) == [0, 1, 2]
    bm.free("b")
    assert bm.num_free_blocks == 6 and bm.num_cached_blocks == 3
    bm.check_invariants(set())


def test_evictable_blocks_are_taken_last_and_least_recently_freed_first():
    bm = BlockManager(num_blocks=5, block_size=BS)
    ha, hb = hashes(list(range(8))), hashes(list(range(100, 108)))
    bm.allocate("a", 8)
    bm.commit("a", ha, 2)
    bm.allocate("b", 8)
    bm.commit("b", hb, 2)
    bm.free("a")  # evictable, tail block first: 1, 0
    bm.free("b")  # then 3, 2
    bm.allocate("c", 4)
    assert bm.block_table("c") == [4]  # the plain free block before any cached one
    assert bm.num_evictions == 0
    bm.allocate("c", 12)
    assert bm.block_table("c") == [4, 1, 0]  # a's blocks were freed first; its tail goes first
    assert bm.num_evictions == 2 and bm.match(ha, 2) == [] and bm.match(hb, 2) == [2, 3]
    bm.check_invariants({"c"})


def test_taking_an_evictable_block_counts_against_the_free_blocks():
    bm = BlockManager(num_blocks=3, block_size=BS, watermark_blocks=1)
    h = hashes(list(range(8)))
    bm.allocate("a", 8)
    bm.commit("a", h, 2)
    bm.free("a")
    cached = bm.match(h, 2)
    assert cached == [0, 1]
    assert bm.num_new_blocks("b", 9, cached) == 3  # two taken out of the LRU, one new
    assert not bm.can_allocate("b", 9, use_watermark=True, cached_blocks=cached)
    assert bm.can_allocate("b", 9, use_watermark=False, cached_blocks=cached)
    assert bm.can_allocate("b", 8, use_watermark=True, cached_blocks=cached)


def test_a_block_whose_content_is_cached_already_stays_uncached():
    bm = BlockManager(num_blocks=4, block_size=BS)
    h = hashes(list(range(4)))
    bm.allocate("a", 4)
    bm.allocate("b", 4)  # computed the same block at the same time, without a hit
    bm.commit("a", h, 1)
    bm.commit("b", h, 1)
    assert bm.block_hash(0) == h[0] and bm.block_hash(1) is None
    bm.free("b")
    assert list(bm._free) == [2, 3, 1]  # plain free again
    bm.check_invariants({"a"})


def test_caching_off_caches_nothing():
    bm = BlockManager(num_blocks=4, block_size=BS, enable_caching=False)
    h = hashes(list(range(8)))
    bm.allocate("a", 8)
    bm.commit("a", h, 2)
    assert bm.match(h, 2) == [] and bm.num_cached_blocks == 0
    bm.free("a")
    assert list(bm._free) == [2, 3, 0, 1]


def test_cached_blocks_only_start_a_table():
    bm = BlockManager(num_blocks=4, block_size=BS)
    h = hashes(list(range(4)))
    bm.allocate("a", 4)
    bm.commit("a", h, 1)
    bm.allocate("b", 2)
    with pytest.raises(RuntimeError, match="already has a block table"):
        bm.allocate("b", 8, bm.match(h, 1))


@pytest.mark.parametrize("kind", ["ref_count", "stale_index", "hash_in_free_queue", "unhashed_evictable"])
def test_check_invariants_detects_cache_corruption(kind):
    bm = BlockManager(num_blocks=4, block_size=BS)
    h = hashes(list(range(8)))
    bm.allocate("a", 8)
    bm.commit("a", h, 2)
    bm.allocate("b", 4)
    bm.check_invariants()
    if kind == "ref_count":
        bm._ref[0] += 1
    elif kind == "stale_index":
        bm._index[h[0]] = 2
    elif kind == "hash_in_free_queue":
        bm._hash[3] = b"x" * 16
        bm._index[b"x" * 16] = 3
    else:
        bm.free("b")
        bm._evictable[3] = None
        bm._free.remove(3)
    with pytest.raises(AssertionError):
        bm.check_invariants()


# -- the schedulers ------------------------------------------------------------------------------

def make(name: str, num_blocks: int = 64, caching: bool = True, watermark: float = 0.0) -> QueueScheduler:
    return make_scheduler(SchedulerConfig(name=name, block_size=BS, max_model_len=1024, watermark=watermark,
                                          enable_prefix_caching=caching), num_blocks)


def req(rid: str, prompt: list[int], max_tokens: int = 2) -> Request:
    return Request(rid, prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True), 0.0)


def run(s: QueueScheduler, budget: int = 64, max_chunk: int | None = None):
    batch = s.schedule(StepBudget(budget, max_chunk), 0.0)
    s.check_invariants()
    s.update(StepResult({c.request_id: 5 for c in batch.chunks if c.sample}, 0.01), 0.0)
    s.check_invariants()
    return batch


def drain(s: QueueScheduler) -> None:
    while s.has_unfinished():
        run(s)


PROMPT = list(range(100, 112))  # three full blocks


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_a_mixed_step_admits_a_cached_prefix_beside_uncached_prompts(name):
    s = make(name)
    s.add_request(req("a", PROMPT))
    drain(s)
    s.add_request(req("b", PROMPT + [7, 8, 9]))  # a's three blocks, then three new tokens
    s.add_request(req("c", list(range(200, 206))))  # nothing cached
    s.add_request(req("d", PROMPT))  # all cached: its last block is recomputed for the logits
    batch = run(s)
    chunks = {c.request_id: c for c in batch.chunks}
    assert {rid: (c.start_position, c.num_tokens) for rid, c in chunks.items()} == {
        "b": (12, 3), "c": (0, 6), "d": (8, 4)}
    assert chunks["b"].block_table[:3] == chunks["d"].block_table[:2] + (chunks["b"].block_table[2],)
    assert batch.num_cached_tokens == 12 + 8 and batch.num_cache_query_tokens == 15 + 6 + 12
    assert [s.get_request(r).num_cached_tokens for r in "bcd"] == [12, 0, 8]
    assert all(c.sample for c in batch.chunks)
    drain(s)
    assert s.block_manager.num_free_blocks == 64


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_caching_off_recomputes_every_prompt(name):
    s = make(name, caching=False)
    s.add_request(req("a", PROMPT))
    drain(s)
    s.add_request(req("b", PROMPT + [7]))
    batch = run(s)
    assert batch.tokens_by_request() == {"b": 13} and batch.chunks[0].start_position == 0
    assert batch.num_cached_tokens == batch.num_cache_query_tokens == 0


def test_budget_and_chunk_limit_apply_to_the_uncached_rest():
    s = make("sarathi")
    s.add_request(req("a", PROMPT))
    drain(s)
    s.add_request(req("b", PROMPT + list(range(20))))  # 12 cached + 20 to compute
    s.add_request(req("c", list(range(300, 310))))
    batch = run(s, budget=10, max_chunk=8)
    assert batch.tokens_by_request() == {"b": 8, "c": 2}
    assert batch.chunks[0].start_position == 12
    assert run(s, budget=10, max_chunk=8).tokens_by_request() == {"b": 8, "c": 2}


def test_a_block_shared_with_a_running_prefill_is_reused_before_it_finishes():
    s = make("sarathi")
    s.add_request(req("a", PROMPT + list(range(20))))
    assert run(s, budget=8).tokens_by_request() == {"a": 8}  # two blocks of a computed, committed
    s.add_request(req("b", PROMPT[:8] + [1, 2, 3]))
    batch = run(s, budget=16, max_chunk=13)
    assert batch.tokens_by_request() == {"a": 13, "b": 3}
    table_a, table_b = (s.block_manager.block_table(r) for r in "ab")
    assert table_b[:2] == table_a[:2] and s.block_manager.ref_count(table_a[0]) == 2


def test_an_evicted_prefix_is_recomputed():
    s = make("sarathi", num_blocks=5)
    s.add_request(req("a", PROMPT, max_tokens=1))
    drain(s)  # a's three blocks are cached (evictable)
    s.add_request(req("x", list(range(500, 516)), max_tokens=1))  # needs four: evicts two of a's
    drain(s)
    assert s.block_manager.num_evictions >= 2
    s.add_request(req("b", PROMPT + [1]))
    batch = run(s)
    assert batch.num_cached_tokens < 12 and batch.chunks[0].start_position == batch.num_cached_tokens


def test_a_preempted_request_resumes_after_its_own_cached_blocks():
    s = make("sarathi", num_blocks=6)
    s.add_request(req("a", list(range(100, 108)), max_tokens=20))
    s.add_request(req("b", list(range(200, 212)), max_tokens=20))
    run(s)  # a 2 blocks (+1 soon), b 3 blocks
    preempted = []
    for _ in range(8):
        batch = run(s)
        preempted += batch.preempted_ids
    assert preempted == ["b"]
    b = s.get_request("b")
    assert b.num_computed_tokens == 0 and b.num_preemptions == 1
    s.finish_request("a", FinishReason.ABORT, 0.0)
    batch = run(s)
    # b's prompt blocks stayed cached while it waited, but a's growth evicted one: the tail one
    # (freed tail first), so b resumes after its first two blocks
    assert s.block_manager.num_evictions >= 1
    assert batch.chunks[0].request_id == "b" and batch.chunks[0].start_position == 8
    assert b.num_cached_tokens == 0  # reported for the first admission only


# -- the controller's view of waiting requests ----------------------------------------------------

def waiting_view(s: QueueScheduler):
    from adaptive_sarathi.engine.state import snapshot_state

    state = snapshot_state(s, 0.0)
    return state.waiting_prefill_tokens, [(p, c) for _, p, c in state.prefill_queue]


def test_waiting_tokens_count_only_the_uncached_rest():
    s = make("sarathi")
    s.add_request(req("a", PROMPT))
    drain(s)  # a's three blocks are cached
    s.add_request(req("b", PROMPT + [7, 8, 9]))  # 12 cached, 3 to compute
    s.add_request(req("c", list(range(200, 206))))  # nothing cached
    s.add_request(req("d", PROMPT))  # 8 cached: its last block is left to compute
    assert waiting_view(s) == (3 + 6 + 4, [(3, 12), (6, 0), (4, 8)])


def test_waiting_tokens_grow_when_a_waiting_prefix_is_evicted():
    s = make("sarathi", num_blocks=5)
    s.add_request(req("a", PROMPT, max_tokens=1))
    drain(s)  # a's three blocks cached, evictable; two plain free blocks
    s.add_request(req("b", PROMPT + [1]))
    assert waiting_view(s) == (1, [(1, 12)])
    bm = s.block_manager
    bm.allocate("x", 4 * BS)  # takes the two free blocks, then evicts a's last two (tail first)
    assert bm.num_evictions == 2
    assert waiting_view(s) == (9, [(9, 4)])
    bm.free("x")
    bm.allocate("y", 5 * BS)  # every block: a's first one goes too
    assert waiting_view(s) == (13, [(13, 0)])


def test_waiting_tokens_shrink_when_a_running_request_commits_their_prefix():
    s = make("sarathi")
    s.add_request(req("a", PROMPT + list(range(20)), max_tokens=1))
    assert run(s, budget=8).tokens_by_request() == {"a": 8}  # a's first two blocks committed
    s.add_request(req("b", PROMPT + [1, 2]))  # 14 tokens
    assert waiting_view(s) == (6, [(24, 8), (6, 8)])  # a runs, 24 of 32 pending; b waits
    s.schedule(StepBudget(1, None), 0.0)  # a takes 1 token: b cannot be admitted yet
    s.update(StepResult({}, 0.01), 0.0)
    s.check_invariants()
    assert waiting_view(s)[1][-1] == (6, 8)
    s.schedule(StepBudget(4, None), 0.0)  # a completes its third block, committed
    s.update(StepResult({}, 0.01), 0.0)
    assert waiting_view(s)[1][-1] == (2, 12)


def test_a_kept_hit_older_than_the_eviction_log_is_matched_afresh(monkeypatch):
    import adaptive_sarathi.engine.block_manager as block_manager

    monkeypatch.setattr(block_manager, "EVICTION_LOG_LEN", 2)
    bm = BlockManager(8, BS)
    a = hashes(list(range(32)))
    bm.allocate("a", 32)
    bm.commit("a", a, 8)
    bm.free("a")
    hit = bm.refresh_hit(None, a, 7)
    assert hit.blocks == list(range(7))
    bm.allocate("x", 6 * BS)  # evicts six: more than the log keeps, so the log is cut
    assert bm.num_evictions == 6 and bm._log_start > hit.num_evictions
    assert bm.refresh_hit(hit, a, 7).blocks == bm.match(a, 7) == [0, 1]  # the tail went first
    bm.check_invariants()
