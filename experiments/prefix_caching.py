"""Prefix caching on multi-turn chat: SLO capacity and TTFT by turn with caching on and off.

Simulated (the default): llama-3-8b on the h100 roofline, sarathi with a fixed budget of 512
(and, for the capacity of chat, the adaptive controller too) under the llama-3-8b-h100-strict
(TTFT P90 2 s, TBT P99 65 ms) and -relaxed (TTFT P90 8 s, TBT P99 325 ms) SLO policies, on two
synthetic conversation workloads
(adaptive_sarathi.workloads.conversations; each turn resends the system prompt, every earlier
message and answer, and a new message; at most 8000 tokens of context):

  chat    2 to 8 turns, one of 8 system prompts of 1000 tokens, user messages of median 200
          tokens, answers of median 250, 20 s mean think time at 1 conversation per second;
  agent   4 to 12 turns behind one of 4 headers of 2000 tokens, tool results of median 300
          tokens, actions of median 80, 5 s between turns.

A capacity search runs the same conversations faster (ConversationWorkload.scaled: starts more
often, think times shorter by the same factor), so near capacity a turn may arrive before the
previous answer is done and find only part of it cached (the "hit rate there" column). It reports

  - the prefix-cache hit rate (prompt tokens served from the cache) against the workload's
    theoretically shareable prompt tokens (full blocks only, unbounded cache), at a low rate;
  - the SLO capacity (adaptive_sarathi.capacity) with caching on and off, and their ratio;
  - the ceiling of that ratio: the steady-state rates at which the engine is saturated with and
    without the shareable prefill work, decode work unchanged (`saturation_rate`);
  - TTFT P50 / P90 by turn, on and off, at the caching-off SLO capacity;
  - the cost of a prefix lookup per request by prompt length: hashing and the full lookup (when
    it is queued) and the in-step refresh of its kept hit; and the memory per KV block of the
    cache's bookkeeping (tracemalloc).

--gpu: the same questions on a real engine (in-process, --model, default dummy:llama-3-8b on
cuda, bfloat16): TTFT of a 100-token prompt against a 4k-token cached prefix + 100 new tokens
(median of REPEATS, caching on; off for reference); greedy outputs with caching on and off
compared token by token on a short multi-turn run on a small KV cache; and one real-time served
run each (on, off) of a compressed conversation workload (think times of 2 s), TTFT by turn.
It writes experiments/results/prefix_caching_gpu.md (or --out DIR).

--sections (hit, capacity, ceiling, ttft, cost), --workloads, --policies and --slo-policies run
part of the simulated set, written to prefix_caching_<what was narrowed>.md; the capacity
searches are the slow part (minutes each on one core).

--smoke: a small workload and coarse searches, printing only (what CI runs).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import timeit
import tracemalloc
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np

from adaptive_sarathi.engine.block_manager import BlockManager
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.request import Request
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.workloads.conversations import ConversationWorkload, shareable_prompt_tokens
from adaptive_sarathi.workloads.lengths import LogNormal, Uniform

RESULTS = Path(__file__).parent / "results"
BLOCK_SIZE, MAX_MODEL_LEN = 16, 8192
POLICY = "fixed:512"  # the hit-rate and TTFT-by-turn runs
# The capacity searches: each workload under fixed:512, and chat (the workload below 2x) under the
# adaptive controller too.
POLICIES = {"chat": ("fixed:512", "adaptive"), "agent": ("fixed:512",)}
REPEATS = 5


def chat(num_conversations: int, seed: int, think_time_s: float = 20.0, qps: float = 1.0,
         max_context_tokens: int = 8000) -> ConversationWorkload:
    """Chat: 2 to 8 turns, one of 8 system prompts of 1000 tokens, user messages of median 200
    tokens, answers of median 250."""
    return ConversationWorkload(
        num_conversations=num_conversations, conversation_qps=qps, turns=Uniform(2, 8),
        user_tokens=LogNormal(200, 0.8, max=1500), output_tokens=LogNormal(250, 0.8, max=800),
        system_prompt_tokens=1000, num_system_prompts=8, think_time_s=think_time_s,
        max_context_tokens=max_context_tokens, seed=seed)


def agent(num_conversations: int, seed: int) -> ConversationWorkload:
    """Agent loops: 4 to 12 turns of tool results (median 300 tokens) and short actions (median
    80), behind one of 4 instruction headers of 2000 tokens, 5 s between turns."""
    return ConversationWorkload(
        num_conversations=num_conversations, conversation_qps=1.0, turns=Uniform(4, 12),
        user_tokens=LogNormal(300, 0.8, max=2000), output_tokens=LogNormal(80, 0.6, max=300),
        system_prompt_tokens=2000, num_system_prompts=4, think_time_s=5.0, max_context_tokens=8000,
        seed=seed)


WORKLOADS = {"chat": chat, "agent": agent}
SLO_POLICIES = ("llama-3-8b-h100-strict", "llama-3-8b-h100-relaxed")


def ttft_by_turn(workload: list, result) -> dict[int, tuple[float, float, int]]:
    """Turn (turns of 6 and more together, as 6) -> (TTFT P50 s, P90 s, requests)."""
    by_turn: dict[int, list[float]] = {}
    for r, timeline in zip(workload, result.timelines):
        by_turn.setdefault(min(r.turn, 6), []).append(timeline.ttft)
    return {t: (float(np.percentile(v, 50)), float(np.percentile(v, 90)), len(v)) for t, v in sorted(by_turn.items())}


def lookup_cost(lengths=(512, 1024, 2048, 4096, 8192), repeats: int = 2000,
                churn_blocks: int = 32) -> list[tuple[int, float, float, float, float]]:
    """Per prompt length, with the whole prompt but its last block cached and held by another
    request: (prompt tokens, us to hash the prompt, us for a full lookup with the hashes known
    (both done when the request is queued, between steps), us for the in-step refresh of its kept
    hit when the cache did not change, and when a step committed and evicted `churn_blocks`
    blocks of other content)."""
    from adaptive_sarathi.engine.block_hash import extend_block_hashes

    def best_us(fn) -> float:
        # The best of five rounds: the host is shared, and others' work only ever adds time.
        return min(timeit.repeat(fn, number=repeats, repeat=5)) / repeats * 1e6

    rows = []
    num_blocks = 4096
    for n in lengths:
        s = make_scheduler(SchedulerConfig(block_size=BLOCK_SIZE, max_model_len=16384), num_blocks)
        bm = s.block_manager
        prompt = [(7 * i) % 30000 + 1 for i in range(n)]
        params = SamplingParams(max_tokens=1)
        warm = Request("warm", prompt, params, 0.0)
        bm.allocate("warm", n)
        bm.commit("warm", s._block_hashes(warm, n // BLOCK_SIZE), n // BLOCK_SIZE)
        # The rest of the pool: cached blocks of other content, evictable, so that every later
        # allocation evicts.
        filler_blocks = num_blocks - bm.num_owned_blocks("warm")
        filler = Request("filler", list(range(40000, 40000 + filler_blocks * BLOCK_SIZE)), params, 0.0)
        bm.allocate("filler", filler.num_tokens)
        bm.commit("filler", s._block_hashes(filler, filler_blocks), filler_blocks)
        bm.free("filler")

        hashes: list[bytes] = []
        hash_us = best_us(lambda: (hashes.clear(), extend_block_hashes(hashes, prompt, BLOCK_SIZE)))
        max_blocks = (n - 1) // BLOCK_SIZE
        full_us = best_us(lambda: bm.match(hashes, max_blocks))
        probe = Request("probe", prompt, params, 0.0)
        assert len(s._prefix_hit(probe)) == max_blocks
        still_us = best_us(lambda: s._prefix_hit(probe))

        rounds = []
        next_token = 10 ** 6
        for _ in range(5):
            total = 0.0
            for i in range(max(20, repeats // 20)):
                rid = f"x{next_token}"
                churn = Request(rid, list(range(next_token, next_token + churn_blocks * BLOCK_SIZE)), params, 0.0)
                next_token += churn_blocks * BLOCK_SIZE
                bm.allocate(rid, churn.num_tokens)  # evicts churn_blocks cached blocks
                bm.commit(rid, s._block_hashes(churn, churn_blocks), churn_blocks)
                bm.free(rid)
                start = time.perf_counter()
                blocks = s._prefix_hit(probe)
                total += time.perf_counter() - start
                assert len(blocks) == max_blocks
            rounds.append(total / (i + 1) * 1e6)
        rows.append((n, hash_us, full_us, still_us, min(rounds)))
    return rows


def memory_per_block(num_blocks: int = 50_000) -> tuple[float, float, float, float, float]:
    """Bytes per block of a BlockManager (caching off; caching on, every block cached and held;
    every block cached and evictable), and bytes per block of a request's block-hash list and of
    a waiting request's kept hit."""
    def measure(build) -> float:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        kept = build()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        size = sum(s.size_diff for s in after.compare_to(before, "filename"))
        del kept
        return size / num_blocks

    tokens = [(7 * i) % 30000 + 1 for i in range(num_blocks * BLOCK_SIZE)]
    from adaptive_sarathi.engine.block_hash import extend_block_hashes
    hashes: list[bytes] = []
    extend_block_hashes(hashes, tokens, BLOCK_SIZE)

    def off():
        bm = BlockManager(num_blocks, BLOCK_SIZE, enable_caching=False)
        bm.allocate("a", num_blocks * BLOCK_SIZE)
        return bm

    def held():
        bm = BlockManager(num_blocks, BLOCK_SIZE)
        bm.allocate("a", num_blocks * BLOCK_SIZE)
        bm.commit("a", hashes, num_blocks)
        return bm

    def evictable():
        bm = held()
        bm.free("a")
        return bm

    def request_hashes():
        out: list[bytes] = []
        extend_block_hashes(out, tokens, BLOCK_SIZE)
        return out

    cached = evictable()

    def kept_hit():  # a waiting request's PrefixHit over a prefix of num_blocks cached blocks
        return cached.refresh_hit(None, hashes, num_blocks)

    return measure(off), measure(held), measure(evictable), measure(request_hashes), measure(kept_hit)


def saturation_rate(model, requests, cached_fraction: float, shared_kv_tokens: float, num_kv_tokens: int,
                    budget: int = 512) -> tuple[float, str]:
    """(requests/s, what binds) at which a fixed-budget engine serving this mix is busy every
    step, in steady state, when a `cached_fraction` of every prompt's tokens costs no prefill.

    Each request brings q = prompt x (1 - cached_fraction) prefill tokens and d = outputs - 1
    decode tokens, each decode attending the mean context c (prompt + half the outputs, weighted
    by decodes). A step holds N decodes and P = N q / d prefill tokens (the mix the requests
    bring), with N + P <= budget (the token budget binds) and N x (c - shared_kv_tokens) <= the
    KV cache (concurrent contexts bind; shared_kv_tokens: context every request shares in the
    cache, e.g. a system prompt). Each decode takes one step, so the rate is N / (d x T), T the
    latency model's time of that step. Decode work is the same whatever cached_fraction."""
    from adaptive_sarathi.engine.latency.shape import StepShape

    prompt = np.array([r.num_prompt_tokens for r in requests], float)
    decodes = np.array([r.num_output_tokens for r in requests], float) - 1
    d = decodes.mean()
    context = float((decodes * (prompt + decodes / 2)).sum() / decodes.sum())
    q = prompt.mean() * (1 - cached_fraction)
    by_budget, by_kv = budget * d / (q + d), num_kv_tokens / max(1.0, context - shared_kv_tokens)
    n = min(by_budget, by_kv)
    prefill = n * q / d
    chunks = max(1, math.ceil(prefill / budget))
    start = prompt.mean() * cached_fraction + max(0.0, q - prefill / chunks) / 2  # a chunk's mean first position
    shape = StepShape(round(prefill), round(n), chunks, round(n * context + chunks * start + prefill), round(n * context))
    return n / (d * model.step_time(shape)), ("token budget" if by_budget <= by_kv else "KV cache")


SECTIONS = ("hit", "capacity", "ceiling", "ttft", "cost")


def simulated(args) -> str:
    """The simulated tables of args.sections (all by default) for args.workloads; "ttft" needs
    "capacity" with fixed:512 (it runs at the caching-off capacity found there)."""
    # Imported here: the --gpu mode runs where the controller's dependencies (river) may be absent.
    from adaptive_sarathi.capacity import find_capacity
    from adaptive_sarathi.controller.slo import load_slo_policy
    from adaptive_sarathi.engine.budget import FixedBudget
    from adaptive_sarathi.engine.latency.roofline import roofline_from_spec
    from adaptive_sarathi.engine.simulator import simulate
    from adaptive_sarathi.scenario import Scenario

    sections = set(args.sections)
    n = 30 if args.smoke else args.num_conversations
    rel_tol = 0.2 if args.smoke else args.rel_tol
    model = roofline_from_spec("h100:llama-3-8b")
    num_kv_blocks = model.num_kv_blocks(BLOCK_SIZE)
    workloads = {name: WORKLOADS[name](n, args.seed) for name in args.workloads}
    slos = SLO_POLICIES[:1] if args.smoke else tuple(args.slo_policies)
    lines = [f"h100:llama-3-8b roofline, {num_kv_blocks} KV blocks of {BLOCK_SIZE} tokens; sarathi; {POLICY} for "
             f"the hit rate and TTFT by turn. Workloads ({n} conversations each; docstrings in the script):", ""]
    lines += [f"- {name}: {w.mean_qps / w.conversation_qps:.2f} turns per conversation, "
              f"{np.mean([r.num_prompt_tokens for r in w.generate()]):.0f} prompt tokens per request on average"
              for name, w in workloads.items()]

    if "hit" in sections:  # the hit rate against the theoretical share, at a low rate on an unbounded cache
        lines += ["", "## Hit rate (unbounded cache, a quarter of the base rate)", "",
                  "| workload | requests | theoretically shareable prompt tokens | measured hit rate | gap (points) |",
                  "| --- | --- | --- | --- | --- |"]
        for name, workload in workloads.items():
            requests = workload.scaled(0.25).generate()
            theory = shareable_prompt_tokens(requests, BLOCK_SIZE) / sum(r.num_prompt_tokens for r in requests)
            big = simulate(requests, SchedulerConfig(name="sarathi", max_model_len=MAX_MODEL_LEN,
                                                     block_size=BLOCK_SIZE), FixedBudget(512), model,
                           num_kv_blocks=10 ** 6)
            lines.append(f"| {name} | {len(requests)} | {theory:.2%} | {big.prefix_cache_hit_rate:.2%} | "
                         f"{(theory - big.prefix_cache_hit_rate) * 100:.2f} |")
        print("\n".join(lines), flush=True)

    found = {}
    if "capacity" in sections:
        lines += ["", "## SLO capacity", "",
                  "| workload | policy | SLO policy | prefix caching | SLO capacity (req/s) | conversations/s | "
                  "think time there (s) | proxy capacity (req/s) | hit rate there | TTFT P90 there (ms) | "
                  "TBT P99 there (ms) | busy fraction there |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        ratios = []
        for name, workload in workloads.items():
            policies = args.policies or POLICIES[name]
            for policy in policies[:1] if args.smoke else policies:
                for slo_name in slos:
                    slo = load_slo_policy(slo_name)
                    caps = {}
                    for caching in (True, False):
                        scheduler = SchedulerConfig(name="sarathi", max_model_len=MAX_MODEL_LEN,
                                                    block_size=BLOCK_SIZE, enable_prefix_caching=caching)
                        scenario = Scenario(workload, scheduler, policy, model, num_kv_blocks, slo=slo, seed=args.seed)
                        start = time.perf_counter()
                        cap = find_capacity(scenario, rel_tol=rel_tol)
                        caps[caching] = (scenario, cap)
                        at = scenario.run(cap.slo_capacity_scale, record_steps=True) if cap.slo_capacity_scale else None
                        head = f"| {name} | {policy} | {slo_name} | {'on' if caching else 'off'} |"
                        row = (f"{head} {cap.slo_capacity_qps:.2f} | "
                               f"{cap.slo_capacity_scale * workload.conversation_qps:.3f} | "
                               f"{workload.think_time_s / cap.slo_capacity_scale:.1f} | {cap.capacity_qps:.2f} | "
                               f"{at.prefix_cache_hit_rate:.1%} | {at.slo.ttft_p_s * 1e3:.0f} | "
                               f"{at.slo.tbt_p_s * 1e3:.0f} | {sum(st.duration_s for st in at.steps) / at.makespan_s:.0%} |"
                               if at else f"{head} 0 | | | | | | | |")
                        lines.append(row)
                        print(row, f"({time.perf_counter() - start:.0f} s search)", flush=True)
                    on, off = caps[True][1].slo_capacity_qps, caps[False][1].slo_capacity_qps
                    ratios.append((name, policy, slo_name, on / off if off else math.inf))
                    if policy == POLICY:
                        found[(name, slo_name)] = caps
        lines += ["", "| workload | policy | SLO policy | SLO capacity on / off |", "| --- | --- | --- | --- |"]
        lines += [f"| {w} | {pol} | {p} | **{r:.2f}x** |" for w, pol, p, r in ratios]
        lines += ["", f"Ratio on / off, target >= 2x on the multi-turn workload (searches to a relative tolerance "
                  f"of {rel_tol:g}). Busy fraction: the steps' time over the makespan.", ""]
        print("\n".join(lines[-(len(ratios) + 4):]), flush=True)

    if "ceiling" in sections:
        lines += ["## The ceiling of the ratio", "",
                  "What on / off is possible if caching removed the prefill of every shareable prompt token and "
                  "changed no decode work (`saturation_rate` in the script): the steady-state rate at which the "
                  "fixed-budget engine (budget 512) is busy every step, off (every prompt token prefilled, no KV "
                  "shared) and on (the shareable tokens free, the system prompt held once in the KV cache), on the "
                  "latency model the searches use.", "",
                  "| workload | shareable prompt tokens | saturated rate off (req/s) | binds | saturated rate on (req/s) "
                  "| binds | ceiling on / off |", "| --- | --- | --- | --- | --- | --- | --- |"]
        kv_tokens = num_kv_blocks * BLOCK_SIZE
        for name, workload in workloads.items():
            requests = workload.generate()
            shareable = shareable_prompt_tokens(requests, BLOCK_SIZE) / sum(r.num_prompt_tokens for r in requests)
            off_rate, off_binds = saturation_rate(model, requests, 0.0, 0.0, kv_tokens)
            on_rate, on_binds = saturation_rate(model, requests, shareable, workload.system_prompt_tokens, kv_tokens)
            lines.append(f"| {name} | {shareable:.1%} | {off_rate:.2f} | {off_binds} | {on_rate:.2f} | {on_binds} | "
                         f"**{on_rate / off_rate:.2f}x** |")
        lines.append("")
        print("\n".join(lines[-(len(workloads) + 6):]), flush=True)

    # TTFT by turn at the caching-off capacity (where off just meets its SLO), strict SLO.
    for name, workload in workloads.items() if "ttft" in sections else ():
        if (name, slos[0]) not in found:
            continue
        caps = found[(name, slos[0])]
        scale = caps[False][1].slo_capacity_scale or 0.25
        turn_rows = {}
        for caching in (True, False):
            scenario = caps[caching][0]
            turn_rows[caching] = ttft_by_turn(scenario.workload.scaled(scale).generate(), scenario.run(scale))
        lines += [f"## TTFT by turn, {name}, {slos[0]}, at {scale * workload.mean_qps:.2f} req/s (the caching-off "
                  "SLO capacity)", "",
                  "| turn | requests | on: P50 ms | on: P90 ms | off: P50 ms | off: P90 ms |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for turn, (p50, p90, count) in turn_rows[True].items():
            o50, o90, _ = turn_rows[False][turn]
            lines.append(f"| {turn + 1}{'+' if turn == 6 else ''} | {count} | {p50 * 1e3:.0f} | {p90 * 1e3:.0f} | "
                         f"{o50 * 1e3:.0f} | {o90 * 1e3:.0f} |")
        lines.append("")
        print("\n".join(lines[-(len(turn_rows[True]) + 5):]), flush=True)

    if "cost" in sections:
        cost = lookup_cost(repeats=50 if args.smoke else 400)
        lines += ["## Lookup cost per request (this CPU)", "",
                  "Hashing and a full lookup run once, when the request is queued (between steps); in a "
                  "step (the engine-state snapshot, then admission) its kept hit is refreshed: free when "
                  "the cache did not change, and one check per block evicted since otherwise (here a step "
                  "that committed and evicted 32 blocks of other content). Best of five rounds.", "",
                  "| prompt tokens | hashing the prompt (us) | full lookup, hashes known (us) | "
                  "in-step refresh, cache unchanged (us) | in-step refresh after 32 evictions + 32 commits (us) |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {h:.1f} | {f:.2f} | {u:.2f} | {c:.2f} |" for n, h, f, u, c in cost]
        mem = memory_per_block(5_000 if args.smoke else 50_000)
        lines += ["", "## Memory per KV block (bookkeeping, tracemalloc)", "",
                  "| block manager, caching off | caching on, cached and held | cached and evictable | "
                  "a request's hash list | a waiting request's kept hit |",
                  "| --- | --- | --- | --- | --- |", "| " + " | ".join(f"{m:.0f} B" for m in mem) + " |", ""]
        print("\n".join(lines[-12:]))
    return "\n".join(lines)


# -- GPU --------------------------------------------------------------------------------------

def gpu(args) -> str:
    import torch

    from adaptive_sarathi.engine.factory import EngineArgs, create_engine

    def engine(caching: bool, **kw):
        kw = {"model": args.model, "dtype": args.dtype, "token_budget": 8192, **kw}
        return create_engine(EngineArgs(device=args.device, max_model_len=MAX_MODEL_LEN, enable_prefix_caching=caching,
                                        seed=args.seed, **kw))

    def ttft(e, prompt) -> float:
        rid = e.add_request(prompt, SamplingParams(max_tokens=1, ignore_eos=True))
        start = time.perf_counter()
        while e.has_unfinished_requests():
            e.step()
        del rid
        return time.perf_counter() - start

    def served(e, reqs) -> dict[int, list[float]]:
        """Serve `reqs` with arrivals on the wall clock; TTFTs (s) by turn."""
        start = time.perf_counter()
        pending = list(enumerate(reqs))
        arrival_of, first = {}, {}
        while pending or e.has_unfinished_requests():
            now = time.perf_counter() - start
            while pending and pending[0][1].arrival_time_s <= now:
                i, r = pending.pop(0)
                rid = e.add_request(list(r.prompt_token_ids), SamplingParams(max_tokens=r.num_output_tokens,
                                                                            ignore_eos=True), request_id=f"s{i}")
                arrival_of[rid] = start + r.arrival_time_s
            if not e.has_unfinished_requests():
                time.sleep(min(0.001, max(0.0, pending[0][1].arrival_time_s - now)))
                continue
            for o in e.step():
                if o.request_id not in first and o.token_ids:
                    first[o.request_id] = time.perf_counter() - arrival_of[o.request_id]
        by_turn: dict[int, list[float]] = {}
        for i, r in enumerate(reqs):
            by_turn.setdefault(min(r.turn, 6), []).append(first[f"s{i}"])
        return by_turn

    rng = np.random.default_rng(args.seed)
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU (a check of this script only)"
    lines = [f"Card: {card}; model {args.model} ({args.dtype}); {date.today()}.", ""]
    rows, by = [], {}
    repeats = 1 if args.smoke else REPEATS
    reqs = chat(6 if args.smoke else 40, args.seed, think_time_s=2.0, qps=args.gpu_qps).generate()
    for caching in (True, False):
        built = time.perf_counter()
        e = engine(caching)
        print(f"engine (caching {'on' if caching else 'off'}) built in {time.perf_counter() - built:.0f} s", flush=True)
        short = [ttft(e, rng.integers(1, 256, 100).tolist()) for _ in range(repeats + 1)][1:]
        cached = []
        for _ in range(repeats + 1):
            prefix = rng.integers(1, 256, 4096).tolist()
            ttft(e, prefix)  # computes (and, with caching, caches) the prefix
            cached.append(ttft(e, prefix + rng.integers(1, 256, 100).tolist()))
        rows.append((caching, statistics.median(short), statistics.median(cached[1:])))
        print(rows[-1], flush=True)
        by[caching] = served(e, reqs)
        del e
        _free_gpu(torch)
    lines += ["## TTFT: 100-token prompt vs 4k cached prefix + 100 new tokens", "",
              f"Median of {repeats} after one warm-up each; one request at a time, max_tokens 1.", "",
              "| prefix caching | 100-token prompt (ms) | 4096 prefix + 100 (ms) | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {'on' if c else 'off'} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.2f} |" for c, a, b in rows]
    lines += ["", "Target: ratio <= 1.2 with caching on.", ""]
    lines += [f"## Served run: {len(reqs)} requests of {6 if args.smoke else 40} chat conversations, "
              f"{args.gpu_qps:g} conversations/s, think time 2 s, arrivals on the wall clock", "",
              "| turn | requests | on: P50 ms | on: P90 ms | off: P50 ms | off: P90 ms |",
              "| --- | --- | --- | --- | --- | --- |"]
    for turn in sorted(by[True]):
        a, b = by[True][turn], by[False][turn]
        lines.append(f"| {turn + 1}{'+' if turn == 6 else ''} | {len(a)} | {np.percentile(a, 50) * 1e3:.1f} | "
                     f"{np.percentile(a, 90) * 1e3:.1f} | {np.percentile(b, 50) * 1e3:.1f} | "
                     f"{np.percentile(b, 90) * 1e3:.1f} |")
    lines.append("")
    print("\n".join(lines), flush=True)

    # Parity: greedy outputs, caching on and off, a multi-turn run on a small cache (evictions,
    # preemption of requests holding shared blocks). float32, so that a near-tie of logits cannot
    # flip under the different (but equivalent) kernels a cached prefix takes.
    outs, stats = {}, {}
    small = chat(12, args.seed, think_time_s=0.01, max_context_tokens=3000).generate()
    for caching in (True, False):
        e = engine(caching, model=args.parity_model, dtype="float32", num_kv_blocks=400, max_num_seqs=16,
                   token_budget=512)
        ids = [e.add_request(list(r.prompt_token_ids), SamplingParams(max_tokens=16, ignore_eos=True))
               for r in small]
        done, preempted, cached = {}, 0, 0

        def count(st):
            nonlocal preempted, cached
            preempted += st.num_preempted
            cached += st.num_cached_tokens

        e.stats_listeners.append(count)
        while e.has_unfinished_requests():
            for o in e.step():
                if o.finished:
                    done[o.request_id] = o.token_ids
        outs[caching] = [done[i] for i in ids]
        stats[caching] = (preempted, cached, e.scheduler.block_manager.num_evictions)
        del e
        _free_gpu(torch)
    same = sum(a == b for a, b in zip(outs[True], outs[False]))
    p, c, ev = stats[True]
    lines += [f"Greedy parity ({args.parity_model}, float32) on {len(small)} multi-turn requests (400 KV blocks, "
              f"budget 512): {same} of {len(small)} identical with caching on and off (with caching: {p} "
              f"preemptions, {c} cached tokens, {ev} evicted blocks).", ""]
    print(lines[-2], flush=True)
    return "\n".join(lines)


def _free_gpu(torch) -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a small run, printing only (for CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-conversations", type=int, default=400)
    parser.add_argument("--gpu", action="store_true", help="measure on a CUDA GPU instead of simulating")
    parser.add_argument("--model", default="dummy:llama-3-8b", help="with --gpu: the model to serve")
    parser.add_argument("--device", default="cuda", help="with --gpu: the device (cpu only checks the script)")
    parser.add_argument("--dtype", default="bfloat16", help="with --gpu: the dtype of the TTFT and served runs")
    parser.add_argument("--parity-model", default="dummy:smollm2-135m",
                        help="with --gpu: the model of the on/off output comparison (run in float32)")
    parser.add_argument("--gpu-qps", type=float, default=2.0, help="with --gpu: conversation starts per second")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="simulated: the tables to produce (a subset writes prefix_caching_<sections>.md)")
    parser.add_argument("--workloads", nargs="+", choices=tuple(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--policies", nargs="+", default=None,
                        help="simulated: the capacity searches' budget policies (default: fixed:512, and adaptive "
                             "on chat)")
    parser.add_argument("--slo-policies", nargs="+", default=list(SLO_POLICIES))
    parser.add_argument("--rel-tol", type=float, default=0.02, help="the capacity searches' relative tolerance")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder the results table goes to")
    args = parser.parse_args()
    if args.gpu:
        body = gpu(args)
        name, title = "prefix_caching_gpu.md", "Prefix caching on a GPU"
    else:
        body = simulated(args)
        partial = (set(args.sections) != set(SECTIONS) or set(args.workloads) != set(WORKLOADS) or args.policies
                   or set(args.slo_policies) != set(SLO_POLICIES))
        parts = [*args.sections, *(args.workloads if set(args.workloads) != set(WORKLOADS) else ()),
                 *(args.policies or ()), *(p.removeprefix("llama-3-8b-h100-") for p in args.slo_policies
                                           if set(args.slo_policies) != set(SLO_POLICIES))]
        name = f"prefix_caching_{'_'.join(parts).replace(':', '')}.md" if partial else "prefix_caching.md"
        title = "Prefix caching on multi-turn chat, simulated"
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        import sys

        command = " ".join(["python experiments/prefix_caching.py", *sys.argv[1:]])
        machine = ("" if args.gpu else f"Host: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the "
                   "end of the run (host times scale with the load).\n\n")
        (args.out / name).write_text(f"# {title}\n\nProduced by `{command}` on {date.today()} (seed {args.seed}).\n\n"
                                     + machine + body + "\n")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
