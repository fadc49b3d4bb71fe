"""Prefix caching on multi-turn chat: SLO capacity and TTFT by turn with caching on and off.

Simulated (the default): llama-3-8b on the h100 roofline, sarathi with a fixed budget of 512
under the llama-3-8b-h100-strict (TTFT P90 2 s, TBT P99 65 ms) and -relaxed (TTFT P90 8 s, TBT
P99 325 ms) SLO policies, on two synthetic conversation workloads
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
  - TTFT P50 / P90 by turn, on and off, at the caching-off SLO capacity;
  - the cost of a prefix lookup per admitted request (hashes cached on the request, as at any
    admission after the first try; and the first try, which also hashes the prompt) by prompt
    length, and the memory per KV block of the cache's bookkeeping (tracemalloc).

--gpu: the same questions on a real engine (in-process, --model, default dummy:llama-3-8b on
cuda, bfloat16): TTFT of a 100-token prompt against a 4k-token cached prefix + 100 new tokens
(median of REPEATS, caching on; off for reference); greedy outputs with caching on and off
compared token by token on a short multi-turn run on a small KV cache; and one real-time served
run each (on, off) of a compressed conversation workload (think times of 2 s), TTFT by turn.
It writes experiments/results/prefix_caching_gpu.md (or --out DIR).

--smoke: a small workload and coarse searches, printing only (what CI runs).
"""

from __future__ import annotations

import argparse
import math
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
POLICY = "fixed:512"
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


def lookup_cost(lengths=(512, 1024, 2048, 4096, 8192), repeats: int = 2000) -> list[tuple[int, float, float]]:
    """(prompt tokens, us per lookup with the hashes cached, us for a first lookup that hashes
    the prompt) with the whole prompt but its last block cached."""
    rows = []
    for n in lengths:
        s = make_scheduler(SchedulerConfig(block_size=BLOCK_SIZE, max_model_len=16384), 4096)
        prompt = [(7 * i) % 30000 + 1 for i in range(n)]
        params = SamplingParams(max_tokens=1)
        warm = Request("warm", prompt, params, 0.0)
        s._prefix_hit(warm)
        s.block_manager.allocate("warm", n)
        s.block_manager.commit("warm", warm.block_hashes, n // BLOCK_SIZE)
        probe = Request("probe", prompt, params, 0.0)
        assert len(s._prefix_hit(probe)) == (n - 1) // BLOCK_SIZE
        # The best of five rounds: the host is shared, and others' work only ever adds time.
        cached_us = min(timeit.repeat(lambda: s._prefix_hit(probe), number=repeats, repeat=5)) / repeats * 1e6
        rounds = []
        for _ in range(5):
            fresh = [Request(f"f{i}", prompt, params, 0.0) for i in range(20)]
            start = time.perf_counter()
            for r in fresh:
                s._prefix_hit(r)
            rounds.append((time.perf_counter() - start) / len(fresh) * 1e6)
        rows.append((n, cached_us, min(rounds)))
    return rows


def memory_per_block(num_blocks: int = 50_000) -> tuple[float, float, float]:
    """Bytes per block of a BlockManager (caching off; caching on, every block cached and held;
    every block cached and evictable), and bytes per block of a request's block-hash list."""
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

    return measure(off), measure(held), measure(evictable), measure(request_hashes)


def simulated(args) -> str:
    # Imported here: the --gpu mode runs where the controller's dependencies (river) may be absent.
    from adaptive_sarathi.capacity import find_capacity
    from adaptive_sarathi.controller.slo import load_slo_policy
    from adaptive_sarathi.engine.budget import FixedBudget
    from adaptive_sarathi.engine.latency.roofline import roofline_from_spec
    from adaptive_sarathi.engine.simulator import simulate
    from adaptive_sarathi.scenario import Scenario

    n = 30 if args.smoke else args.num_conversations
    rel_tol = 0.2 if args.smoke else 0.02
    model = roofline_from_spec("h100:llama-3-8b")
    num_kv_blocks = model.num_kv_blocks(BLOCK_SIZE)
    workloads = {name: make(n, args.seed) for name, make in WORKLOADS.items()}
    slos = SLO_POLICIES[:1] if args.smoke else SLO_POLICIES
    lines = [f"h100:llama-3-8b roofline, {num_kv_blocks} KV blocks of {BLOCK_SIZE} tokens; sarathi {POLICY}. "
             f"Workloads ({n} conversations each; docstrings in the script):", ""]
    lines += [f"- {name}: {w.mean_qps / w.conversation_qps:.2f} turns per conversation, "
              f"{np.mean([r.num_prompt_tokens for r in w.generate()]):.0f} prompt tokens per request on average"
              for name, w in workloads.items()]

    # Hit rate against the theoretical share, at a low rate on an unbounded cache.
    lines += ["", "## Hit rate (unbounded cache, a quarter of the base rate)", "",
              "| workload | requests | theoretically shareable prompt tokens | measured hit rate | gap (points) |",
              "| --- | --- | --- | --- | --- |"]
    for name, workload in workloads.items():
        requests = workload.scaled(0.25).generate()
        theory = shareable_prompt_tokens(requests, BLOCK_SIZE) / sum(r.num_prompt_tokens for r in requests)
        big = simulate(requests, SchedulerConfig(name="sarathi", max_model_len=MAX_MODEL_LEN, block_size=BLOCK_SIZE),
                       FixedBudget(512), model, num_kv_blocks=10 ** 6)
        lines.append(f"| {name} | {len(requests)} | {theory:.2%} | {big.prefix_cache_hit_rate:.2%} | "
                     f"{(theory - big.prefix_cache_hit_rate) * 100:.2f} |")
    print("\n".join(lines), flush=True)

    lines += ["", "## SLO capacity", "",
              "| workload | SLO policy | prefix caching | SLO capacity (req/s) | conversations/s | think time there (s) "
              "| proxy capacity (req/s) | hit rate there | TTFT P90 there (ms) | TBT P99 there (ms) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ratios, found = [], {}
    for name, workload in workloads.items():
        for slo_name in slos:
            slo = load_slo_policy(slo_name)
            caps = {}
            for caching in (True, False):
                scheduler = SchedulerConfig(name="sarathi", max_model_len=MAX_MODEL_LEN, block_size=BLOCK_SIZE,
                                            enable_prefix_caching=caching)
                scenario = Scenario(workload, scheduler, POLICY, model, num_kv_blocks, slo=slo, seed=args.seed)
                start = time.perf_counter()
                cap = find_capacity(scenario, rel_tol=rel_tol)
                caps[caching] = (scenario, cap)
                at = scenario.run(cap.slo_capacity_scale) if cap.slo_capacity_scale else None
                row = (f"| {name} | {slo_name} | {'on' if caching else 'off'} | {cap.slo_capacity_qps:.2f} | "
                       f"{cap.slo_capacity_scale * workload.conversation_qps:.3f} | "
                       f"{workload.think_time_s / cap.slo_capacity_scale:.1f} | {cap.capacity_qps:.2f} | "
                       f"{at.prefix_cache_hit_rate:.1%} | {at.slo.ttft_p_s * 1e3:.0f} | {at.slo.tbt_p_s * 1e3:.0f} |"
                       if at else f"| {name} | {slo_name} | {'on' if caching else 'off'} | 0 | | | | | | |")
                lines.append(row)
                print(row, f"({time.perf_counter() - start:.0f} s search)", flush=True)
            on, off = caps[True][1].slo_capacity_qps, caps[False][1].slo_capacity_qps
            ratios.append((name, slo_name, on / off if off else math.inf))
            found[(name, slo_name)] = caps
    lines += ["", "| workload | SLO policy | SLO capacity on / off |", "| --- | --- | --- |"]
    lines += [f"| {w} | {p} | **{r:.2f}x** |" for w, p, r in ratios]
    lines += ["", "Ratio on / off, target >= 2x on the multi-turn workload.", ""]
    print("\n".join(lines[-(len(ratios) + 4):]), flush=True)

    # TTFT by turn at the caching-off capacity (where off just meets its SLO), strict SLO.
    for name, workload in workloads.items():
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

    cost = lookup_cost(repeats=50 if args.smoke else 400)
    lines += ["## Lookup cost per admitted request (this CPU)", "",
              "| prompt tokens | lookup, hashes cached (us) | first lookup, hashing the prompt (us) |",
              "| --- | --- | --- |"]
    lines += [f"| {n} | {c:.2f} | {f:.1f} |" for n, c, f in cost]
    mem = memory_per_block(5_000 if args.smoke else 50_000)
    lines += ["", "## Memory per KV block (bookkeeping, tracemalloc)", "",
              "| block manager, caching off | caching on, cached and held | cached and evictable | a request's hash list |",
              "| --- | --- | --- | --- |", "| " + " | ".join(f"{m:.0f} B" for m in mem) + " |", ""]
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
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder the results table goes to")
    args = parser.parse_args()
    if args.gpu:
        body = gpu(args)
        name, title = "prefix_caching_gpu.md", "Prefix caching on a GPU"
    else:
        body = simulated(args)
        name, title = "prefix_caching.md", "Prefix caching on multi-turn chat, simulated"
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_text(f"# {title}\n\nProduced by `python experiments/prefix_caching.py"
                                     f"{' --gpu' if args.gpu else ''}` on {date.today()} (seed {args.seed}).\n\n"
                                     + body + "\n")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
