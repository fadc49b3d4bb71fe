import pytest

from adaptive_sarathi.engine.block_manager import BlockManager


def test_allocate_grows_table_to_cover_positions_in_fifo_order():
    bm = BlockManager(num_blocks=8, block_size=4)
    assert bm.can_allocate("a", 5, use_watermark=False)
    bm.allocate("a", 5)
    assert bm.block_table("a") == [0, 1]
    bm.allocate("a", 8)  # still two blocks
    assert bm.block_table("a") == [0, 1]
    bm.allocate("b", 1)
    bm.allocate("a", 9)
    assert bm.block_table("a") == [0, 1, 3]
    assert bm.block_table("b") == [2]
    assert (bm.num_free_blocks, bm.num_total_blocks, bm.usage) == (4, 8, 0.5)
    bm.check_invariants({"a", "b"})


def test_free_returns_blocks_to_the_back_of_the_queue():
    bm = BlockManager(num_blocks=4, block_size=2)
    bm.allocate("a", 4)
    bm.free("a")
    bm.free("a")  # unknown ids are a no-op
    assert bm.num_free_blocks == 4
    assert bm.block_table("a") == []
    bm.allocate("b", 8)
    assert bm.block_table("b") == [2, 3, 0, 1]
    bm.check_invariants({"b"})


def test_zero_tokens_creates_no_table():
    bm = BlockManager(num_blocks=2, block_size=4)
    bm.allocate("a", 0)
    assert bm.num_owned_blocks("a") == 0
    bm.check_invariants(set())


def test_watermark_applies_to_admissions_only():
    bm = BlockManager(num_blocks=4, block_size=4, watermark_blocks=1)
    assert bm.can_allocate("a", 12, use_watermark=True)
    assert not bm.can_allocate("a", 13, use_watermark=True)
    bm.allocate("a", 12)
    assert not bm.can_allocate("b", 1, use_watermark=True)
    assert bm.can_allocate("a", 16, use_watermark=False)
    bm.allocate("a", 16)
    assert bm.num_free_blocks == 0
    assert not bm.can_allocate("a", 17, use_watermark=False)
    assert bm.can_allocate("a", 16, use_watermark=True)  # nothing new needed


def test_allocate_without_room_raises_and_changes_nothing():
    bm = BlockManager(num_blocks=2, block_size=4)
    bm.allocate("a", 4)
    with pytest.raises(RuntimeError, match="can_allocate"):
        bm.allocate("a", 12)
    assert bm.block_table("a") == [0]
    assert bm.num_free_blocks == 1


@pytest.mark.parametrize("kwargs", [
    dict(num_blocks=0, block_size=4),
    dict(num_blocks=4, block_size=0),
    dict(num_blocks=4, block_size=4, watermark_blocks=4),
    dict(num_blocks=4, block_size=4, watermark_blocks=-1),
])
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError):
        BlockManager(**kwargs)


def _corrupt(kind: str) -> BlockManager:
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.allocate("a", 4)
    bm.allocate("b", 4)
    if kind == "free_and_owned":
        bm._free.append(bm._tables["a"][0])
        bm._free.popleft()
    elif kind == "owned_twice":
        bm._tables["b"].append(bm._tables["a"][0])
    elif kind == "lost":
        bm._free.popleft()
    elif kind == "duplicate_free":
        bm._free[0] = bm._free[1]
    return bm


@pytest.mark.parametrize("kind", ["free_and_owned", "owned_twice", "lost", "duplicate_free"])
def test_check_invariants_detects_corruption(kind):
    with pytest.raises(AssertionError):
        _corrupt(kind).check_invariants()


def test_check_invariants_detects_blocks_of_dead_requests():
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.allocate("a", 4)
    bm.check_invariants()
    bm.check_invariants({"a"})
    with pytest.raises(AssertionError, match="'a'"):
        bm.check_invariants({"b"})
