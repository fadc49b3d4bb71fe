"""Step-by-step tests of the four schedulers, driven by a fake executor (no model, no GPU)."""

from __future__ import annotations

import random

import pytest

from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.budget import StepBudget
from adaptive_sarathi.engine.config import SCHEDULER_NAMES, SchedulerConfig
from adaptive_sarathi.engine.request import FinishReason, Request, RequestStatus
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import (
    OrcaScheduler, QueueScheduler, RequestLevelScheduler, RequestUpdate, SarathiScheduler, VllmScheduler,
    make_scheduler)

TOKEN = 7


def make(name: str, num_blocks: int = 64, *, block_size: int = 4, max_num_seqs: int = 256,
         max_model_len: int = 1024, watermark: float = 0.0, caching: bool = False) -> QueueScheduler:
    # Caching off by default here: req() prompts all start 100, 101, ... so they would share
    # prefixes, and these tests pin the policies' token counts without it (test_prefix_caching.py
    # and the randomized runs test it on).
    config = SchedulerConfig(name=name, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                             block_size=block_size, watermark=watermark, enable_prefix_caching=caching)
    return make_scheduler(config, num_blocks)


def req(rid: str, prompt_len: int, max_tokens: int = 16, arrival: float = 0.0,
        eos: int | tuple[int, ...] | None = None, **params) -> Request:
    eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else eos
    return Request(rid, list(range(100, 100 + prompt_len)),
                   SamplingParams(max_tokens=max_tokens, **params), arrival, eos_token_ids=eos_ids)


def add(s: QueueScheduler, *requests: Request) -> None:
    for r in requests:
        s.add_request(r)


def run(s: QueueScheduler, budget: int, max_chunk: int | None = None, now: float = 0.0,
        token=lambda chunk: TOKEN) -> ScheduledBatch:
    """One engine step: schedule, fake-execute, update; invariants checked after each phase."""
    batch = s.schedule(StepBudget(budget, max_chunk), now)
    s.check_invariants()
    s.update(StepResult({c.request_id: token(c) for c in batch.chunks if c.sample}, 0.01), now)
    s.check_invariants()
    return batch


def step(s: QueueScheduler, budget: int, max_chunk: int | None = None, now: float = 0.0) -> dict[str, int]:
    return run(s, budget, max_chunk, now).tokens_by_request()


def test_factory_builds_each_scheduler_with_its_block_manager():
    classes = dict(sarathi=SarathiScheduler, vllm=VllmScheduler, orca=OrcaScheduler,
                   request_level=RequestLevelScheduler)
    for name in SCHEDULER_NAMES:
        s = make(name, num_blocks=200, watermark=0.05)
        assert type(s) is classes[name]
        assert s.block_manager.num_total_blocks == 200
        assert s.block_manager.watermark_blocks == 10
        assert s.max_context_len == 190 * 4


# -- sarathi ---------------------------------------------------------------------------------

def test_sarathi_decodes_first_then_chunked_prefills_within_budget():
    s = make("sarathi")
    add(s, req("d", 2))
    assert step(s, 8, 4) == {"d": 2}
    add(s, req("a", 10), req("b", 3))
    batch = run(s, 8, 4)
    assert batch.tokens_by_request() == {"d": 1, "a": 4, "b": 3}
    assert [c.is_prefill for c in batch.chunks] == [False, True, True]
    assert [c.sample for c in batch.chunks] == [True, False, True]
    assert batch.chunks[1].token_ids == tuple(range(100, 104))
    batch = run(s, 8, 4)
    assert [c.request_id for c in batch.chunks] == ["d", "b", "a"]
    assert batch.tokens_by_request() == {"d": 1, "b": 1, "a": 4}
    assert batch.chunks[2].start_position == 4
    assert (s.num_running, s.num_decodes, s.num_waiting) == (3, 2, 0)
    assert step(s, 8, 4) == {"d": 1, "b": 1, "a": 2}
    assert step(s, 8, 4) == {"d": 1, "a": 1, "b": 1}


def test_sarathi_several_partial_prefills_share_a_step():
    s = make("sarathi")
    add(s, req("a", 5), req("b", 5), req("c", 5))
    assert step(s, 8, 3) == {"a": 3, "b": 3, "c": 2}
    assert step(s, 8, 3) == {"a": 2, "b": 2, "c": 3}
    assert step(s, 8, 3) == {"a": 1, "b": 1, "c": 1}


def test_sarathi_budget_limits_decodes_in_running_order():
    s = make("sarathi")
    add(s, req("a", 1), req("b", 1), req("c", 1), req("d", 4))
    assert step(s, 3) == {"a": 1, "b": 1, "c": 1}
    assert step(s, 2) == {"a": 1, "b": 1}
    assert step(s, 5) == {"a": 1, "b": 1, "c": 1, "d": 2}


def test_sarathi_head_of_line_blocking_by_blocks():
    s = make("sarathi", num_blocks=4)
    add(s, req("a", 9, max_tokens=1), req("b", 5), req("c", 2))
    assert step(s, 32) == {"a": 9}  # b needs 2 blocks, 1 is free; c must wait behind b
    assert s.get_request("a") is None
    assert step(s, 32) == {"b": 5, "c": 2}


def test_sarathi_watermark_holds_back_admissions():
    s = make("sarathi", num_blocks=10, watermark=0.2)
    add(s, req("a", 20), req("b", 16))
    assert step(s, 64) == {"a": 20}  # b's 4 blocks would leave 1 < 2 free
    assert s.block_manager.num_free_blocks == 5


def test_max_num_seqs_caps_running():
    s = make("sarathi", max_num_seqs=2)
    add(s, req("a", 2, max_tokens=1), req("b", 2), req("c", 2))
    assert step(s, 32) == {"a": 2, "b": 2}
    assert step(s, 32) == {"b": 1, "c": 2}


def test_future_arrivals_wait_for_the_clock():
    s = make("sarathi")
    add(s, req("a", 2, arrival=0.0), req("b", 3, arrival=5.0), req("c", 4, arrival=1.0))
    assert s.next_arrival_time() == 0.0
    assert s.next_arrival_time(0.0) == 1.0
    assert step(s, 32, now=0.0) == {"a": 2}
    assert step(s, 32, now=0.9) == {"a": 1}
    assert step(s, 32, now=1.0) == {"a": 1, "c": 4}
    assert s.next_arrival_time(1.0) == 5.0
    assert step(s, 32, now=4.9) == {"a": 1, "c": 1}
    assert step(s, 32, now=5.0) == {"a": 1, "c": 1, "b": 3}
    assert s.next_arrival_time(5.0) is None
    b = s.get_request("b")
    assert b.timeline.first_scheduled_time == 5.0 and b.timeline.scheduling_delay == 0.0


def test_empty_batch_when_nothing_arrived():
    for name in SCHEDULER_NAMES:
        s = make(name)
        add(s, req("a", 2, arrival=3.0))
        assert run(s, 8, now=1.0).is_empty
        assert s.has_unfinished() and s.num_waiting == 1 and s.num_running == 0


# -- vllm ------------------------------------------------------------------------------------

def test_vllm_alternates_prefill_only_and_decode_only_steps():
    s = make("vllm")
    add(s, req("a", 4, max_tokens=3))
    assert step(s, 16) == {"a": 4}
    add(s, req("b", 6))
    assert step(s, 16) == {"b": 6}  # a stalls while a prompt is admitted
    assert step(s, 16) == {"a": 1, "b": 1}
    add(s, req("c", 20), req("d", 3))
    assert step(s, 16) == {"c": 20}  # longer than the budget: admitted alone, first of its step
    assert step(s, 16) == {"d": 3}
    assert step(s, 2) == {"a": 1, "b": 1, "c": 1, "d": 1}  # decodes ignore the budget
    assert s.get_request("a") is None


def test_vllm_packs_whole_prompts_up_to_the_budget():
    s = make("vllm")
    add(s, req("a", 6), req("b", 10), req("c", 10))
    assert step(s, 16) == {"a": 6, "b": 10}
    assert step(s, 16) == {"c": 10}


def test_vllm_decodes_when_the_head_does_not_fit():
    s = make("vllm", num_blocks=4)
    add(s, req("a", 8), req("b", 12))
    assert step(s, 64) == {"a": 8}
    assert step(s, 64) == {"a": 1}  # b needs 3 blocks, 2 are free


# -- orca ------------------------------------------------------------------------------------

def test_orca_hybrid_steps_without_chunking():
    s = make("orca")
    add(s, req("a", 3))
    assert step(s, 8) == {"a": 3}
    add(s, req("b", 4), req("c", 4))
    assert step(s, 8) == {"a": 1, "b": 4}
    assert step(s, 8) == {"a": 1, "b": 1, "c": 4}
    add(s, req("d", 12), req("e", 1))
    batch = run(s, 8)
    assert batch.tokens_by_request() == {"a": 1, "b": 1, "c": 1, "d": 12}  # first prompt, whole
    assert [c.is_prefill for c in batch.chunks] == [False, False, False, True]
    assert step(s, 8) == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}


# -- request level ---------------------------------------------------------------------------

def test_request_level_waits_for_the_batch_to_drain():
    s = make("request_level", max_num_seqs=8)
    add(s, req("a", 3, max_tokens=2), req("b", 5, max_tokens=4))
    assert step(s, 100) == {"a": 3, "b": 5}
    add(s, req("c", 2))
    assert step(s, 100) == {"a": 1, "b": 1}
    assert step(s, 100) == {"b": 1}
    assert step(s, 100) == {"b": 1}
    assert step(s, 100) == {"c": 2}


def test_request_level_batch_respects_budget_and_max_num_seqs():
    s = make("request_level", max_num_seqs=2)
    add(s, req("a", 30, max_tokens=1), req("b", 2, max_tokens=1), req("c", 2, max_tokens=1),
        req("d", 2, max_tokens=1))
    assert step(s, 16) == {"a": 30}
    assert step(s, 16) == {"b": 2, "c": 2}
    assert step(s, 16) == {"d": 2}


# -- preemption ------------------------------------------------------------------------------

def _counting_token(chunk):
    return 1000 + chunk.num_output_tokens


@pytest.mark.parametrize("name", ["sarathi", "vllm", "orca", "request_level"])
def test_preempted_request_recomputes_and_finishes_with_the_same_tokens(name):
    s = make(name, num_blocks=4)
    add(s, req("a", 4, max_tokens=8), req("b", 4, max_tokens=8))
    counts = [run(s, 16, token=_counting_token).tokens_by_request() for _ in range(5)]
    assert counts == [{"a": 4, "b": 4}] + [{"a": 1, "b": 1}] * 4
    b = s.get_request("b")
    batch = run(s, 16, token=_counting_token)  # a needs a 3rd block: b, the tail, is preempted
    assert batch.tokens_by_request() == {"a": 1}
    assert batch.preempted_ids == ["b"]
    assert b.status is RequestStatus.WAITING and b.num_computed_tokens == 0 and b.num_preemptions == 1
    assert s.block_manager.num_owned_blocks("b") == 0
    assert b.output_token_ids == [1000, 1001, 1002, 1003, 1004]
    for _ in range(2):
        assert run(s, 16, token=_counting_token).tokens_by_request() == {"a": 1}
    assert s.get_request("a") is None
    batch = run(s, 16, now=1.0, token=_counting_token)
    assert batch.tokens_by_request() == {"b": 9}  # prompt + outputs, recomputed as a prefill
    assert b.timeline.first_scheduled_time == 0.0
    assert batch.chunks[0].is_prefill and batch.chunks[0].sample
    assert batch.chunks[0].token_ids == (100, 101, 102, 103, 1000, 1001, 1002, 1003, 1004)
    while s.has_unfinished():
        assert run(s, 16, token=_counting_token).tokens_by_request() == {"b": 1}
    assert b.output_token_ids == list(range(1000, 1008))
    assert b.finish_reason is FinishReason.LENGTH
    assert s.block_manager.num_free_blocks == 4


def test_request_preempts_itself_when_no_other_victim_is_left():
    s = make("sarathi", num_blocks=4)
    add(s, req("a", 3), req("b", 5))
    assert step(s, 16) == {"a": 3, "b": 5}
    for _ in range(3):
        assert step(s, 16) == {"a": 1, "b": 1}
    batch = run(s, 16)  # b needs a 3rd block; a is already in the batch
    assert batch.tokens_by_request() == {"a": 1}
    assert batch.preempted_ids == ["b"]
    assert s.get_request("b").num_computed_tokens == 0


def test_sarathi_admits_nothing_in_a_step_that_preempted():
    s = make("sarathi", num_blocks=4)
    add(s, req("a", 4), req("b", 4))
    for _ in range(5):
        step(s, 16, 4)
    batch = run(s, 16, 4)  # b's first 4-token chunk would fit the block left over
    assert batch.tokens_by_request() == {"a": 1} and batch.preempted_ids == ["b"]
    assert step(s, 16, 4) == {"a": 1, "b": 4}


def test_preempted_requests_return_to_the_front_in_admission_order():
    s = make("orca", num_blocks=3, block_size=2, max_num_seqs=3)
    add(s, req("a", 2), req("b", 2), req("c", 2), req("d", 1))
    assert step(s, 16) == {"a": 2, "b": 2, "c": 2}
    batch = run(s, 16)  # a takes the tail's (c's) block; b then finds none and preempts itself
    assert batch.tokens_by_request() == {"a": 1}
    assert batch.preempted_ids == ["c", "b"]
    assert [r.request_id for r in s.waiting] == ["b", "c", "d"]
    assert [r.request_id for r in s.running] == ["a"]


# -- stop conditions -------------------------------------------------------------------------

def _finish_one(s: QueueScheduler, r: Request, budget: int = 64) -> list[RequestUpdate]:
    add(s, r)
    updates: list[RequestUpdate] = []
    while s.has_unfinished():
        batch = s.schedule(StepBudget(budget), 0.0)
        updates += s.update(StepResult({c.request_id: TOKEN for c in batch.chunks if c.sample}, 0.0), 0.0)
    return updates


@pytest.mark.parametrize("prompt_len, kwargs, outputs, reason", [
    (3, dict(eos=TOKEN), 1, FinishReason.STOP),
    (3, dict(eos=(TOKEN + 1, TOKEN)), 1, FinishReason.STOP),  # any of a model's end ids (Llama 3 has three)
    (3, dict(max_tokens=4, eos=TOKEN, ignore_eos=True), 4, FinishReason.LENGTH),
    (3, dict(stop_token_ids=[5, TOKEN]), 1, FinishReason.STOP),
    (3, dict(max_tokens=5, eos=TOKEN + 1), 5, FinishReason.LENGTH),
    (6, dict(max_tokens=100), 2, FinishReason.LENGTH),  # max_model_len=8
    (8, dict(max_tokens=100), 1, FinishReason.LENGTH),
])
def test_stop_checks(prompt_len, kwargs, outputs, reason):
    s = make("sarathi", max_model_len=8)
    r = req("r", prompt_len, **kwargs)
    updates = _finish_one(s, r, budget=8)
    assert len(r.output_token_ids) == outputs == len(updates)
    assert r.finish_reason is reason and r.status is RequestStatus.FINISHED
    assert [u.finished for u in updates] == [False] * (outputs - 1) + [True]
    assert updates[-1].finish_reason is reason and updates[-1].new_token_ids == [TOKEN]
    assert s.block_manager.num_free_blocks == s.block_manager.num_total_blocks


def test_context_window_is_capped_by_the_kv_cache():
    s = make("sarathi", num_blocks=4, block_size=4, max_model_len=100)
    assert s.max_context_len == 16
    r = req("r", 14, max_tokens=100)
    _finish_one(s, r)
    assert len(r.output_token_ids) == 2


def test_timeline_is_recorded():
    s = make("sarathi")
    r = req("r", 6, max_tokens=2, arrival=1.0)
    add(s, r)
    run(s, 4, now=2.0)
    run(s, 4, now=3.0)
    run(s, 4, now=4.0)
    t = r.timeline
    assert (t.first_scheduled_time, t.first_token_time, t.token_times, t.finished_time) == (2.0, 3.0, [3.0, 4.0], 4.0)
    assert t.ttft == 2.0 and t.tbts == [1.0]


# -- finish_request / abort ------------------------------------------------------------------

def test_abort_frees_blocks_of_running_and_removes_waiting():
    s = make("sarathi", num_blocks=8, max_num_seqs=1)
    a, b = req("a", 9), req("b", 2)
    add(s, a, b)
    step(s, 16)
    assert s.block_manager.num_free_blocks == 5
    assert s.finish_request("a", FinishReason.ABORT, now=1.0)
    assert a.status is RequestStatus.FINISHED and a.finish_reason is FinishReason.ABORT
    assert a.timeline.finished_time == 1.0
    assert s.block_manager.num_free_blocks == 8
    assert s.finish_request("b", FinishReason.STOP, now=1.0)
    assert not s.has_unfinished()
    assert not s.finish_request("a", FinishReason.ABORT, now=1.0)
    assert not s.finish_request("nope", FinishReason.ABORT, now=1.0)
    s.check_invariants()


def test_abort_between_schedule_and_update_is_skipped():
    s = make("sarathi")
    add(s, req("a", 3), req("b", 3))
    batch = s.schedule(StepBudget(16), 0.0)
    assert s.finish_request("a", FinishReason.ABORT, 0.0)
    updates = s.update(StepResult({c.request_id: TOKEN for c in batch.chunks}, 0.0), 0.0)
    assert [u.request_id for u in updates] == ["b"]
    s.check_invariants()


def test_add_request_rejects_bad_requests():
    s = make("sarathi", max_model_len=8)
    s.add_request(req("a", 8))
    with pytest.raises(ValueError, match="already"):
        s.add_request(req("a", 2))
    with pytest.raises(ValueError, match="9 tokens"):
        s.add_request(req("b", 9))
    with pytest.raises(ValueError, match="0 tokens"):
        s.add_request(req("c", 0))
    assert s.num_waiting == 1


# -- randomized ------------------------------------------------------------------------------

EOS = 3


def _fake_token(request_id: str, num_output_tokens: int) -> int:
    """Deterministic in (request, output index), so recomputation must reproduce the outputs."""
    i, n = int(request_id[1:]), num_output_tokens
    return EOS if (i * 7 + n * 13) % 41 == 0 else 10 + (i * 31 + n * 17) % 50


def _expected_outputs(r: Request, max_context_len: int) -> list[int]:
    outputs: list[int] = []
    while True:
        token = _fake_token(r.request_id, len(outputs))
        outputs.append(token)
        if token == EOS and not r.sampling_params.ignore_eos:
            return outputs
        if len(outputs) >= r.sampling_params.max_tokens or r.num_prompt_tokens + len(outputs) >= max_context_len:
            return outputs


def _check_batch(s: QueueScheduler, name: str, batch: ScheduledBatch, budget: StepBudget,
                 was_running: bool, was_waiting: set[str]) -> None:
    bm = s.block_manager
    ids = [c.request_id for c in batch.chunks]
    assert len(set(ids)) == len(ids)
    assert not set(ids) & set(batch.preempted_ids)
    flags = [c.is_prefill for c in batch.chunks]
    assert flags == sorted(flags), "decodes come before prefill chunks"
    for c in batch.chunks:
        r = s.get_request(c.request_id)
        assert r.status is RequestStatus.RUNNING
        assert c.start_position == r.num_computed_tokens and c.num_tokens >= 1
        assert list(c.token_ids) == r.token_ids_slice(c.start_position, c.context_len)
        assert list(c.block_table) == bm.block_table(c.request_id)
        assert len(c.block_table) * bm.block_size >= c.context_len
        assert c.sample == (c.context_len == r.num_tokens)
        assert c.num_output_tokens == len(r.output_token_ids)
        assert c.is_prefill == (r.num_pending_tokens > 1 or not r.output_token_ids)
    prefills = [c for c in batch.chunks if c.is_prefill]
    if name == "sarathi":
        assert batch.num_tokens <= budget.token_budget
        assert all(c.num_tokens <= budget.chunk_limit for c in prefills)
    else:
        # whole prompts only (past a cached prefix of whole blocks), and only the first prompt of a
        # step may take it over the budget
        assert all(c.sample and c.start_position % bm.block_size == 0 for c in prefills)
        assert len(prefills) <= 1 or batch.num_tokens <= budget.token_budget
    if name in ("vllm", "request_level"):
        # a prefill step admits only (a readmitted request with all but its last token cached
        # computes that token alone, as a decode does)
        assert not prefills or all(c.request_id in was_waiting for c in batch.chunks)
    if name == "request_level" and prefills:
        assert not was_running


class FakeKV:
    """A KV cache written and read as a model would: each chunk writes its tokens' slots and
    reads every slot before them. A slot holds what a real one depends on: the token and every
    token before it (a running hash of the prefix). A read that finds another value than the
    request's tokens give, or a write into a block another request holds, fails."""

    def __init__(self, s: QueueScheduler):
        self.s = s
        self.slots: dict[tuple[int, int], int] = {}

    def execute(self, batch: ScheduledBatch) -> None:
        bm, bs = self.s.block_manager, self.s.block_manager.block_size
        for c in batch.chunks:
            r = self.s.get_request(c.request_id)
            values, h = [], 0
            for token in r.token_ids_slice(0, c.context_len):
                h = hash((h, token))
                values.append(h)
            for p in range(c.start_position):
                assert self.slots.get((c.block_table[p // bs], p % bs)) == values[p], (
                    f"{c.request_id} reads a wrong KV slot at position {p}")
            for p in range(c.start_position, c.context_len):
                block = c.block_table[p // bs]
                assert bm.ref_count(block) == 1, f"{c.request_id} writes block {block}, which others hold"
                self.slots[(block, p % bs)] = values[p]


def _random_prompts(rng: random.Random, n: int, max_len: int, shared: bool) -> list[list[int]]:
    """Random prompts; with `shared`, most start with one of three prefixes or repeat an earlier
    prompt with a suffix (a later turn of a conversation), and tokens come from four values, so
    that equal blocks after different prefixes are common (they must not be shared)."""
    low, high = (10, 13) if shared else (10, 99)
    prefixes = [[rng.randint(low, high) for _ in range(rng.randint(1, max_len // 3))] for _ in range(3)]
    prompts: list[list[int]] = []
    for _ in range(n):
        kind = rng.random() if shared else 1.0
        if kind < 0.4:
            head = rng.choice(prefixes)
        elif kind < 0.6 and prompts:
            head = rng.choice(prompts)[:max_len // 2]
        else:
            head = []
        tail = [rng.randint(low, high) for _ in range(rng.randint(0 if head else 1, max(1, max_len // 2 - len(head))))]
        prompts.append((head + tail)[:max_len // 2])
    return prompts


def _random_run(name: str, seed: int, caching: bool = True, shared: bool = False) -> tuple[int, int, int]:
    """Random arrivals, lengths, budgets and aborts on a small cache; returns the preemption
    count, the cached tokens admissions found and the preemptions of requests that held blocks
    other requests held too."""
    rng = random.Random(seed)
    s = make(name, num_blocks=rng.randint(6, 16), block_size=rng.choice([2, 4]),
             max_num_seqs=rng.randint(2, 8), max_model_len=rng.randint(16, 64),
             watermark=rng.choice([0.0, 0.15]), caching=caching)
    bm = s.block_manager
    kv = FakeKV(s)
    max_len = s.max_context_len
    requests: list[Request] = []
    t = 0.0
    for i, prompt in enumerate(_random_prompts(rng, 60, max_len, shared)):
        t += rng.expovariate(40.0)
        requests.append(Request(
            f"r{i}", prompt, SamplingParams(max_tokens=rng.randint(1, 30), ignore_eos=rng.random() < 0.2),
            arrival_time=t, eos_token_ids=(EOS,)))
    upfront, later = requests[:30], requests[30:]
    for r in rng.sample(upfront, len(upfront)):  # out of order on purpose
        s.add_request(r)
    aborted: set[str] = set()
    now, steps, preemptions, cached, shared_preemptions = 0.0, 0, 0, 0, 0
    while s.has_unfinished() or later:
        steps += 1
        assert steps < 3000, "no progress"
        while later and later[0].arrival_time <= now + 0.05:
            s.add_request(later.pop(0))
        budget = StepBudget(rng.randint(1, 40), rng.choice([None, rng.randint(1, 16)]))
        was_running = s.num_running > 0
        sharing = {r.request_id for r in s.running if any(bm.ref_count(b) > 1 for b in bm.block_table(r.request_id))}
        was_waiting = {r.request_id for r in s.waiting}
        batch = s.schedule(budget, now)
        s.check_invariants()
        _check_batch(s, name, batch, budget, was_running, was_waiting)
        preemptions += len(batch.preempted_ids)
        shared_preemptions += len(sharing & set(batch.preempted_ids))
        cached += batch.num_cached_tokens
        assert caching or batch.num_cached_tokens == batch.num_cache_query_tokens == 0
        if batch.is_empty and s.has_unfinished():
            assert s.num_running == 0
            now = s.next_arrival_time(now)  # nothing runnable: only future arrivals are left
            assert now is not None
        kv.execute(batch)
        if rng.random() < 0.02 and s.has_unfinished():
            victim = rng.choice([r for r in requests if s.get_request(r.request_id) is not None])
            assert s.finish_request(victim.request_id, FinishReason.ABORT, now)
            aborted.add(victim.request_id)
        s.update(StepResult({c.request_id: _fake_token(c.request_id, c.num_output_tokens)
                               for c in batch.chunks if c.sample}, 0.01), now)
        s.check_invariants()
        now += 0.01
    assert bm.num_free_blocks == bm.num_total_blocks
    assert caching or bm.num_cached_blocks == 0
    for r in requests:
        assert r.status is RequestStatus.FINISHED
        assert r.num_cached_tokens % bm.block_size == 0 and r.num_cached_tokens < r.num_prompt_tokens
        if r.request_id in aborted:
            assert r.finish_reason is FinishReason.ABORT
        else:
            assert r.output_token_ids == _expected_outputs(r, max_len), r.request_id
            assert len(r.timeline.token_times) == len(r.output_token_ids)
    return preemptions, cached, shared_preemptions


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_randomized_no_lost_request(name):
    runs = [_random_run(name, seed, caching=False) for seed in range(8)]
    assert sum(p for p, _, _ in runs) > 0
    assert sum(c for _, c, _ in runs) == 0


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_randomized_prefix_caching_shares_blocks_safely(name):
    """Shared prefixes, repeated turns, preemption and aborts with caching on: every step's KV
    reads find the request's own tokens, no shared block is written, outputs are exact."""
    runs = [_random_run(name, seed, caching=True, shared=True) for seed in range(12)]
    assert sum(p for p, _, _ in runs) > 0
    assert sum(c for _, c, _ in runs) > 0
    assert sum(sp for _, _, sp in runs) > 0, "no request was preempted while sharing blocks"


def test_the_is_prefill_rule_counts_a_recompute_as_prefill():
    from adaptive_sarathi.engine.request import in_prefill

    assert in_prefill(0, 1)  # a one-token prompt, nothing output yet
    assert in_prefill(3, 10)  # preempted after 3 outputs: prompt and outputs recompute
    assert not in_prefill(3, 1)  # only the last output pending: a decode


# -- relegation of requests past their TTFT deadline ---------------------------------------------

def due(r: Request, ttft_s: float = 4.5) -> Request:
    """`r` with the TTFT deadline the engine would stamp under a `ttft_s` target."""
    r.ttft_deadline_s = r.arrival_time + ttft_s
    return r


def test_late_requests_wait_behind_those_that_can_still_meet_their_deadline():
    s = make("sarathi")
    add(s, due(req("old1", 4, arrival=0.0)), due(req("old2", 4, arrival=1.0)), due(req("new", 4, arrival=5.0)),
        due(req("future", 4, arrival=9.0)))
    # At t=6, old1 and old2 (due at 4.5 and 5.5) can no longer make their deadline.
    batch = s.schedule(StepBudget(4, relegate_before_s=6.0), 6.0)
    assert batch.tokens_by_request() == {"new": 4} and batch.relegated_ids == ["old1", "old2"]
    s.check_invariants()
    s.update(StepResult({"new": TOKEN}, 0.01), 6.0)
    assert [r.request_id for r in s.waiting] == ["old1", "old2", "future"]
    assert s.num_waiting == 3
    # With nothing on time waiting, the late ones are served, earliest deadline first.
    assert s.schedule(StepBudget(5), 6.1).tokens_by_request() == {"new": 1, "old1": 4}
    s.check_invariants()


def test_waiting_requests_are_admitted_by_deadline_and_future_ones_block_nobody():
    s = make("sarathi", max_num_seqs=1)
    # batch arrived first but is due in 30 s; chat arrived later, due in 1 s; "soon" has not
    # arrived and must not hold back the ones that have.
    add(s, due(req("batch", 4, max_tokens=1, arrival=0.0), 30.0), due(req("chat", 4, max_tokens=1, arrival=0.5), 1.0),
        due(req("soon", 4, max_tokens=1, arrival=5.0), 0.1))
    assert step(s, 8, now=1.0) == {"chat": 4}
    assert step(s, 8, now=1.1) == {"batch": 4}
    assert step(s, 8, now=5.0) == {"soon": 4}
    s.check_invariants()


def test_preempted_requests_are_never_relegated_and_late_ones_can_be_aborted():
    s = make("orca", num_blocks=3, block_size=2, max_num_seqs=3)
    add(s, due(req("a", 2)), due(req("b", 2)), due(req("c", 2)), due(req("d", 1, arrival=0.5)))
    assert step(s, 16) == {"a": 2, "b": 2, "c": 2}
    assert run(s, 16).preempted_ids == ["c", "b"]  # b and c started at t=0 and are requeued at the front
    s.schedule(StepBudget(16, relegate_before_s=10.0), 11.0)
    s.check_invariants()
    assert [r.request_id for r in s.waiting][-1] == "d"  # only d, never scheduled, went to the late queue
    assert s.finish_request("d", FinishReason.ABORT, 11.0)
    s.check_invariants()
    assert "d" not in [r.request_id for r in s.waiting]


def test_engine_state_lists_the_prefill_queue_in_service_order():
    from adaptive_sarathi.engine.state import snapshot_state

    s = make("sarathi")
    add(s, due(req("r", 10, arrival=0.0)), due(req("w1", 6, arrival=1.0)), due(req("w2", 3, arrival=2.0)),
        req("later", 3, arrival=50.0))
    step(s, 4, now=2.0)  # r admitted with 4 of its 10 tokens
    state = snapshot_state(s, 3.0)
    # (deadline, pending, computed): the running prefill first, then the waiting ones by deadline.
    assert state.prefill_queue == ((4.5, 6, 4), (5.5, 6, 0), (6.5, 3, 0))
    assert state.decode_tbt_slack_s == float("inf")  # no decodes yet


def test_engine_state_gives_the_tightest_decodes_tbt_slack():
    from adaptive_sarathi.engine.state import snapshot_state

    s = make("sarathi")
    chat, batch = req("chat", 4, max_tokens=8), req("batch", 4, max_tokens=8)
    chat.tbt_target_s, batch.tbt_target_s = 0.05, 0.5
    add(s, chat, batch)
    step(s, 16, now=1.0)  # both prefilled: first tokens at t=1.0
    assert snapshot_state(s, 1.02).decode_tbt_slack_s == pytest.approx(0.03)


# -- SLO classes: chunks by deadline, preemption by class ----------------------------------------

def test_a_request_due_sooner_takes_its_chunk_before_a_running_prefill_due_later():
    s = make("sarathi")
    batch = due(req("batch", 40, max_tokens=2, arrival=0.0), 30.0)
    add(s, batch, due(req("chat", 6, max_tokens=2, arrival=0.5), 1.0))
    assert step(s, 8, now=0.1) == {"batch": 8}  # chat has not arrived
    # chat (due at 1.5) is admitted ahead of batch's running prefill (due at 30): it gets its whole
    # prompt, batch the rest of the budget.
    assert run(s, 8, now=0.6).chunks[0].request_id == "chat"
    assert step(s, 8, now=0.7) == {"chat": 1, "batch": 7}


def test_without_deadlines_running_prefills_keep_their_chunks_ahead_of_new_requests():
    s = make("sarathi")
    add(s, req("first", 40, max_tokens=2), req("second", 6, max_tokens=2, arrival=0.5))
    assert step(s, 8, now=0.1) == {"first": 8}
    assert step(s, 8, now=0.6) == {"first": 8}  # FCFS: the running prefill first, no room left


def test_running_prefills_take_chunks_earliest_deadline_first():
    s = make("sarathi")
    add(s, due(req("late", 20, arrival=0.0), 30.0), due(req("soon", 20, arrival=0.0), 2.0))
    # Both start in the first step (the waiting queue is by deadline: soon first).
    assert step(s, 8, 4, now=0.0) == {"soon": 4, "late": 4}
    assert [c.request_id for c in run(s, 6, 4, now=0.1).chunks] == ["soon", "late"]


def test_running_list_keeps_the_tightest_tbt_class_first():
    s = make("sarathi")
    loose, tight = req("batch", 4), req("chat", 4)
    loose.tbt_target_s, tight.tbt_target_s = 0.325, 0.065
    add(s, loose)
    step(s, 16)
    add(s, tight)
    step(s, 16)
    assert [r.request_id for r in s.running] == ["chat", "batch"]


def test_out_of_kv_preempts_the_loosest_class_before_an_older_interactive_decode():
    s = make("sarathi", num_blocks=4)
    batch, chat = req("batch", 4, max_tokens=8), req("chat", 4, max_tokens=8)
    batch.tbt_target_s, chat.tbt_target_s = 0.325, 0.065
    add(s, batch)
    step(s, 16)  # batch admitted first
    add(s, chat)
    for _ in range(4):
        step(s, 16)
    # Both need a third block and one is left: under admission order chat (the newest) would be
    # recomputed; by class, batch is.
    assert run(s, 16).preempted_ids == ["batch"]
    assert s.get_request("chat").status is RequestStatus.RUNNING
