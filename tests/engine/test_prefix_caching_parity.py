"""Greedy output is token-identical with prefix caching on and off on the embedded SmolLM2 (CPU,
float32), on a KV cache small enough that shared prefixes are evicted mid-run and requests are
preempted while holding blocks that other requests hold too."""

import pytest

from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.sampling_params import SamplingParams

pytestmark = [pytest.mark.embedded_model, pytest.mark.slow]

BLOCK = 16
NEW_TOKENS = 12
HEADER = ("<|im_start|>system\nYou are a careful assistant. Answer in one short sentence, cite no sources, "
          "and never repeat the question.<|im_end|>\n")
QUESTIONS = ["What is the capital of France?", "Why is the sky blue?", "Name a prime number above 50.",
             "What does a compiler do?", "How many legs has a spider?", "What is photosynthesis?"]
FILLER = "A completely different document about river deltas, sediment and tides. " * 8


class Run:
    """One engine, stepped by hand so that every batch can be looked at."""

    def __init__(self, caching: bool):
        self.engine = create_engine(EngineArgs(device="cpu", dtype="float32", num_kv_blocks=14, block_size=BLOCK,
                                               token_budget=48, max_chunk=32, max_num_seqs=6,
                                               enable_prefix_caching=caching))
        self.tok = self.engine.tokenizer
        self.cached_tokens = 0
        self.preempted_sharing = 0
        self.preempted = 0
        schedule = self.engine.scheduler.schedule

        def watched(budget, now):
            bm = self.engine.scheduler.block_manager
            sharing = {r.request_id for r in self.engine.scheduler.running
                       if any(bm.ref_count(b) > 1 for b in bm.block_table(r.request_id))}
            batch = schedule(budget, now)
            self.engine.scheduler.check_invariants()
            self.cached_tokens += batch.num_cached_tokens
            self.preempted += len(batch.preempted_ids)
            self.preempted_sharing += len(sharing & set(batch.preempted_ids))
            return batch

        self.engine.scheduler.schedule = watched

    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        params = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)
        ids = [self.engine.add_request(p, params) for p in prompts]
        done = {}
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                if out.finished:
                    done[out.request_id] = out.token_ids
        return [done[i] for i in ids]

    def conversation(self) -> list[list[int]]:
        """Three rounds: first turns sharing a system header; a long unrelated prompt that evicts
        cached blocks; second turns (each first turn, its answer and a follow-up) beside new
        first turns."""
        enc = self.tok.encode
        first = [enc(HEADER + f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n") for q in QUESTIONS]
        outputs = self.generate(first)
        outputs += self.generate([enc(FILLER)])
        follow = enc("<|im_end|>\n<|im_start|>user\nSay it again, shorter.<|im_end|>\n<|im_start|>assistant\n")
        second = [p + o + follow for p, o in zip(first, outputs)]
        outputs += self.generate(second[:4] + first[4:])
        return outputs


@pytest.fixture(scope="module")
def runs():
    return {caching: (run := Run(caching), run.conversation()) for caching in (False, True)}


def test_outputs_are_token_identical_with_caching_on_and_off(runs):
    (off, expected), (on, got) = runs[False], runs[True]
    assert got == expected
    assert off.cached_tokens == 0
    assert on.cached_tokens > 0


def test_the_run_evicted_shared_prefixes_and_preempted_requests_holding_shared_blocks(runs):
    on, _ = runs[True]
    bm = on.engine.scheduler.block_manager
    assert bm.num_evictions > 0
    assert on.preempted_sharing > 0
    assert bm.num_free_blocks == bm.num_total_blocks
