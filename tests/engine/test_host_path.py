"""The structures that keep the per-step host path short: cached block-table arrays, the
scheduler's decode shortcut and the vectorized input preparation, each checked against the plain
computation it replaces."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptive_sarathi.engine.batch import BlockTable, ScheduledBatch, ScheduledChunk, StepResult, block_table_array
from adaptive_sarathi.engine.budget import StepBudget
from adaptive_sarathi.engine.config import SCHEDULER_NAMES, SchedulerConfig
from adaptive_sarathi.engine.input_prep import order_for_attention, prepare_inputs
from adaptive_sarathi.engine.request import FinishReason, Request
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import QueueScheduler, make_scheduler

P = SamplingParams()


# -- BlockTable ------------------------------------------------------------------------------

def test_block_table_is_a_tuple_with_a_cached_read_only_array():
    table = BlockTable([5, 1, 9])
    assert table == (5, 1, 9) and hash(table) == hash((5, 1, 9)) and list(table) == [5, 1, 9]
    assert table.array.dtype == np.int32 and table.array.tolist() == [5, 1, 9]
    assert table.array is table.array  # built once
    with pytest.raises(ValueError):
        table.array[0] = 3
    assert block_table_array(table) is table.array
    plain = block_table_array((4, 2))
    assert plain.dtype == np.int32 and plain.tolist() == [4, 2] and plain.flags.writeable


def test_block_table_pickles_as_its_ids():
    table = BlockTable([3, 4])
    table.array  # noqa: B018 - build the cache; it is not pickled
    copy = pickle.loads(pickle.dumps(table))
    assert type(copy) is BlockTable and copy == table and "array" not in vars(copy)
    assert copy.array.tolist() == [3, 4]


# -- the scheduler's cached block tables -----------------------------------------------------

def _fake_token(chunk: ScheduledChunk) -> int:
    return 10 + (int(chunk.request_id[1:]) * 31 + chunk.num_output_tokens * 17) % 50


def _drive(s: QueueScheduler, rng: random.Random, steps: int, on_batch=None) -> list[ScheduledBatch]:
    """Random budgets and occasional aborts; returns every batch. Calls on_batch(batch, previous
    tables) after each schedule."""
    batches = []
    now = 0.0
    previous: dict[str, BlockTable] = {}
    for _ in range(steps):
        if not s.has_unfinished():
            break
        budget = StepBudget(rng.randint(1, 48), rng.choice([None, rng.randint(1, 16)]))
        batch = s.schedule(budget, now)
        s.check_invariants()  # includes: every cached table equals the block manager's
        if on_batch is not None:
            on_batch(batch, previous)
        previous = {c.request_id: c.block_table for c in batch.chunks}
        if rng.random() < 0.03:
            victim = rng.choice([r.request_id for r in (*s.running, *s.waiting)])
            s.finish_request(victim, FinishReason.ABORT, now)
        s.update(StepResult({c.request_id: _fake_token(c) for c in batch.chunks if c.sample}, 0.01), now)
        s.check_invariants()
        batches.append(batch)
        now += 0.01
    return batches


def _scheduler(name: str, rng: random.Random) -> QueueScheduler:
    config = SchedulerConfig(name=name, max_num_seqs=rng.randint(2, 8), max_model_len=rng.randint(24, 64),
                             block_size=rng.choice([2, 4]), watermark=rng.choice([0.0, 0.1]))
    s = make_scheduler(config, rng.randint(8, 20))
    for i in range(24):
        s.add_request(Request(f"r{i}", [rng.randint(10, 99) for _ in range(rng.randint(1, s.max_context_len // 2))],
                              SamplingParams(max_tokens=rng.randint(1, 24), ignore_eos=True), arrival_time=0.0))
    return s


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_chunks_carry_the_block_managers_tables_as_reused_block_tables(name):
    """Tables grow (appended blocks), vanish (finish, abort) and restart (preemption) while the
    scheduler caches them: every chunk must carry the current table, as a BlockTable whose array
    agrees, and the same object as the last step while the table did not grow."""
    reused = grown = preempted = 0
    for seed in range(6):
        rng = random.Random(seed)
        s = _scheduler(name, rng)
        bm = s.block_manager

        def check(batch: ScheduledBatch, previous: dict[str, BlockTable]) -> None:
            nonlocal reused, grown, preempted
            preempted += len(batch.preempted_ids)
            for c in batch.chunks:
                assert type(c.block_table) is BlockTable
                assert list(c.block_table) == bm.block_table(c.request_id)
                assert c.block_table.array.tolist() == list(c.block_table)
                before = previous.get(c.request_id)
                if before is not None and tuple(before) == tuple(c.block_table):
                    assert c.block_table is before  # not rebuilt
                    reused += 1
                elif before is not None:
                    grown += 1

        _drive(s, rng, 400, check)
    assert reused and grown and preempted  # every case was exercised


def _schedules(name: str, seed: int) -> list:
    rng = random.Random(seed)
    return [([(c.request_id, tuple(c.token_ids), c.start_position, tuple(c.block_table), c.sample,
               c.num_output_tokens, c.is_prefill) for c in b.chunks], list(b.preempted_ids))
            for b in _drive(_scheduler(name, rng), rng, 400)]


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_decode_shortcut_schedules_what_the_general_path_does(name, monkeypatch):
    """_schedule_decode must build exactly the chunks _schedule_running(step, request, 1) builds,
    preemptions included."""
    with_shortcut = [_schedules(name, seed) for seed in range(4)]
    monkeypatch.setattr(QueueScheduler, "_schedule_decode",
                        lambda self, step, request: self._schedule_running(step, request, 1))
    assert with_shortcut == [_schedules(name, seed) for seed in range(4)]
    assert any(preempted for run in with_shortcut for _, preempted in run)


# -- prepare_inputs against the per-token computation -----------------------------------------

def _reference_inputs(batch: ScheduledBatch, block_size: int) -> dict:
    """The layout prepare_inputs must produce, computed token by token in plain Python."""
    chunks = order_for_attention(batch)
    ids, positions, slots, rows, spans, decodes = [], [], [], [], [], []
    for c in chunks:
        needed = -(-c.context_len // block_size)
        if len(c.block_table) < needed:
            raise ValueError(f"request {c.request_id}: block table has {len(c.block_table)} blocks, "
                             f"its context of {c.context_len} tokens needs {needed}")
        q_start = len(ids)
        for p in range(c.start_position, c.context_len):
            positions.append(p)
            slots.append(c.block_table[p // block_size] * block_size + p % block_size)
        ids.extend(c.token_ids)
        if c.num_tokens == 1:
            decodes.append(c)
        else:
            spans.append((q_start, len(ids), c.start_position, list(c.block_table[:needed])))
        if c.sample:
            rows.append(len(ids) - 1)
    width = max((len(c.block_table) for c in decodes), default=0)
    return {"input_ids": ids, "positions": positions, "slots": slots, "rows": rows, "spans": spans,
            "tables": [list(c.block_table) + [0] * (width - len(c.block_table)) for c in decodes],
            "width": width, "context_lens": [c.context_len for c in decodes],
            "sample_ids": [c.request_id for c in chunks if c.sample]}


def _random_batch(rng: random.Random, block_size: int) -> ScheduledBatch:
    chunks = []
    for i in range(rng.randrange(0, 10)):
        n = rng.choice([1, 1, 1, 2, 5, 19])
        start = rng.randrange(0, 90)
        length = -(-(start + n) // block_size) + rng.randrange(0, 3) - (rng.random() < 0.02)
        table = [rng.randrange(0, 1000) for _ in range(length)]
        chunks.append(ScheduledChunk(f"r{i}", tuple(rng.randrange(1000) for _ in range(n)), start,
                                     BlockTable(table) if rng.random() < 0.7 else tuple(table),
                                     rng.random() < 0.8, P, 0, n > 1 or rng.random() < 0.1))
    return ScheduledBatch(chunks)


def test_prepare_inputs_matches_the_per_token_computation():
    rng = random.Random(0)
    errors = 0
    for _ in range(1500):
        block_size = rng.choice([1, 4, 16])
        batch = _random_batch(rng, block_size)
        try:
            want = _reference_inputs(batch, block_size)
        except ValueError as err:
            errors += 1
            with pytest.raises(ValueError) as got:
                prepare_inputs(batch, block_size)
            assert str(got.value) == str(err)
            continue
        x = prepare_inputs(batch, block_size)
        meta = x.attention
        for tensor, dtype in ((x.input_ids, torch.int64), (x.positions, torch.int64), (x.output_rows, torch.int64),
                              (meta.slot_mapping, torch.int64), (meta.decode_block_tables, torch.int32),
                              (meta.decode_context_lens, torch.int32)):
            assert tensor.dtype == dtype and tensor.is_contiguous()
        assert x.input_ids.tolist() == want["input_ids"]
        assert x.positions.tolist() == want["positions"]
        assert meta.slot_mapping.tolist() == want["slots"]
        assert x.output_rows.tolist() == want["rows"]
        assert [c.request_id for c in x.sample_chunks] == want["sample_ids"]
        assert meta.num_decode_tokens == len(want["context_lens"])
        assert tuple(meta.decode_block_tables.shape) == (len(want["tables"]), want["width"])
        assert meta.decode_block_tables.tolist() == want["tables"]
        assert meta.decode_context_lens.tolist() == want["context_lens"]
        assert meta.max_decode_context_len == max(want["context_lens"], default=0)
        assert [(s.q_start, s.q_end, s.start_position, s.block_table.tolist()) for s in meta.prefills] == want["spans"]
        assert all(s.block_table.dtype == torch.int32 for s in meta.prefills)
    assert errors  # the error path was exercised


def test_prepare_inputs_returns_buffers_the_caller_owns():
    """Tensors must not alias a BlockTable's cached array: the caller may write into them."""
    table = BlockTable(range(8))
    batch = ScheduledBatch([ScheduledChunk("d", (1,), 4, table, True, P, 1, False),
                            ScheduledChunk("p", (1, 2, 3), 0, table, True, P, 0, True)])
    x = prepare_inputs(batch, block_size=4)
    x.attention.decode_block_tables.fill_(-1)
    x.attention.prefills[0].block_table.fill_(-1)
    assert table.array.tolist() == list(range(8))
    assert prepare_inputs(batch, block_size=4).attention.decode_block_tables.tolist() == [list(range(8))]


# -- the benchmark ----------------------------------------------------------------------------

@pytest.mark.slow
def test_host_overhead_bench_smoke():
    script = Path(__file__).resolve().parents[2] / "experiments" / "host_overhead_bench.py"
    done = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "step() outside executor" in done.stdout
