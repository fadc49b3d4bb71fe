"""Why served requests of the tightest class miss at 2x adaptive's SLO capacity, simulated.

One simulation per mix of experiments/slo_classes.py (same workload files, SLO policies, latency
profile and KV cache), with adaptive and its admission control, at --load x adaptive's SLO
capacity (default 2x the capacity in experiments/results/slo_classes.md; --qps overrides it).
For every served request of the mix's tightest TTFT class that misses a target of its class:

  target   "ttft", "tbt" (its own P-th percentile token gap over the class's TBT target) or both;
  forecast what admission predicted at its arrival: the prompt tokens due before it in deadline
           order plus its own, at the policy's planned prefill rate (prefill_rate_tps());
  window   what happened from its arrival to its first token, from the recorded schedule: the
           prompt tokens computed then, split into its own, those of requests queued before it
           and due no later (what the forecast counted), those of requests arriving after it and
           due before it (overtakers: not in the forecast), and the rest (requests due later,
           relegated ones); the prompt rate achieved (prompt tokens / window seconds) and the
           share of the budget decodes took;
  cause    the first that explains the TTFT miss: "forecast over target" (admitted although the
           forecast exceeded the target: cannot happen with the rule), "slow drain" (the tokens
           the forecast counted, at the achieved rate, already exceed the target), "overtaken"
           (they fit, but not with the overtakers' tokens added), "other work" (neither: tokens
           the forecast did not count and no tighter arrival brought, e.g. chunks of requests
           due later, or the request's own chunk limit); "tbt" for a TBT-only miss.

Writes experiments/results/overload_misses.md; --smoke runs 40 requests of one mix and prints.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.simulator import simulate
from adaptive_sarathi.scenario import Scenario, default_kv_blocks, latency_model, slo_targets
from slo_classes import DEFAULT_PROFILE, MAX_MODEL_LEN, RESULTS, ROOT, WORKLOADS
from trace_stand_ins import workload_file


@dataclass(frozen=True)
class Miss:
    """One served tightest-class request that missed; times in seconds, counts in tokens."""

    request: int
    target: str
    cause: str
    ttft_s: float
    forecast_s: float
    own: int
    ahead: int  # computed in the window, of requests queued before it and due no later
    late: int  # of those, requests already past their deadline at its arrival
    overtakers: int
    other: int
    rate_tps: float  # prompt tokens per second achieved in the window
    planned_tps: float  # the rate admission divided by
    decode_share: float  # of the window's tokens, decodes


class RecordingAdmission:
    """Wraps a policy's admits(): records, per call in arrival order, the decision, the planned
    prefill rate and the forecast (seconds) the rule compared. Other attributes pass through."""

    def __init__(self, policy):
        self._policy = policy
        self.calls: list[tuple[bool, float, float]] = []

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def admits(self, state, num_prompt_tokens, slo_class=None):
        ok = self._policy.admits(state, num_prompt_tokens, slo_class)
        rate = self._policy.prefill_rate_tps() or float("nan")
        own = self._policy.slo_targets().targets_for(slo_class).ttft_s
        mine = state.now_s + own
        ahead = sum(p for d, p, _ in state.prefill_queue if d == float("inf") or state.now_s <= d <= mine)
        self.calls.append((ok, rate, (ahead + num_prompt_tokens) / rate))
        return ok


def tightest_class(targets) -> str:
    """The class with the shortest TTFT target (SloTargets with classes)."""
    return min(targets.classes, key=lambda c: targets.classes[c].ttft_s)


def adaptive_capacity_qps(name: str) -> float:
    """Adaptive's SLO capacity of mix `name` as experiments/results/slo_classes.md states it."""
    text = RESULTS.joinpath("slo_classes.md").read_text()
    section = text.split(f"## {name} ")[1]
    return float(re.search(r"^\| adaptive \| ([0-9.]+) \|", section, re.M).group(1))


def diagnose(name: str, qps: float, num_requests: int | None, seed: int, model, blocks: int):
    """(misses, served, refused, requests) of the tightest class of mix `name` at `qps`."""
    path, slo_name = WORKLOADS[name]
    spec = workload_file(ROOT / path, seed=seed)
    if num_requests is not None:
        spec = spec.with_requests_per_phase(num_requests)
    slo = load_slo_policy(slo_name)
    scenario = Scenario(spec, SchedulerConfig(name="sarathi", max_model_len=MAX_MODEL_LEN), "adaptive", model,
                        blocks, slo=slo, seed=seed)
    workload = spec.scaled(qps / spec.mean_qps).generate()
    policy = RecordingAdmission(scenario.make_policy())
    result = simulate(workload, scenario.scheduler, policy, model, num_kv_blocks=blocks, slo=slo_targets(slo),
                      record_steps=True, record_schedule=True, admission=True)
    judged = slo_targets(slo)
    tight = tightest_class(judged)
    targets = judged.targets_for(tight)
    order = sorted(range(len(workload)), key=lambda i: workload[i].arrival_time_s)
    assert len(policy.calls) == len(order), "every arrival is offered once"
    admitted = [i for i, call in zip(order, policy.calls) if call[0]]
    call_of = dict(zip(order, policy.calls))
    timeline = dict(zip(admitted, result.timelines))
    klass = {i: workload[i].slo_class for i in range(len(workload))}
    deadline = {i: workload[i].arrival_time_s + judged.targets_for(klass[i]).ttft_s for i in admitted}
    steps, schedule = result.steps, result.schedule
    assert len(steps) == len(schedule)
    ends = np.array([s.start_time_s + s.duration_s for s in steps])
    starts = np.array([s.start_time_s for s in steps])
    first = {i: timeline[i].first_token_time for i in admitted}
    misses = []
    served = [i for i in admitted if klass[i] == tight]
    for i in served:
        t = timeline[i]
        ttft_miss = t.ttft > targets.ttft_s
        gaps = t.tbts
        tbt_miss = bool(gaps) and np.percentile(gaps, targets.tbt_percentile) > targets.tbt_s
        if not (ttft_miss or tbt_miss):
            continue
        a, f = t.arrival_time, t.first_token_time
        own = ahead = late = over = other = decodes = 0
        for s in range(np.searchsorted(ends, a, side="right"), np.searchsorted(ends, f, side="left") + 1):
            for rid, n in schedule[s].items():
                j = int(rid)
                if ends[s] > first[j] + 1e-12:  # past its first token: a decode
                    decodes += n
                elif j == i:
                    own += n
                elif workload[j].arrival_time_s <= a and deadline[j] <= deadline[i]:
                    ahead += n
                    late += n if deadline[j] < a else 0
                elif workload[j].arrival_time_s > a and deadline[j] < deadline[i]:
                    over += n
                else:
                    other += n
        window = f - a
        rate = (own + ahead + over + other) / window
        _, planned, forecast = call_of[i][:3]
        limit = targets.ttft_s
        if not ttft_miss:
            cause = "tbt"
        elif forecast > limit:
            cause = "forecast over target"
        elif (own + ahead) / rate > limit:
            cause = "slow drain"
        elif (own + ahead + over) / rate > limit:
            cause = "overtaken"
        else:
            cause = "other work"
        target = "+".join(x for x, m in (("ttft", ttft_miss), ("tbt", tbt_miss)) if m)
        total = own + ahead + over + other + decodes
        misses.append(Miss(i, target, cause, t.ttft, forecast, own, ahead, late, over, other, rate, planned,
                           decodes / total if total else 0.0))
    refused = sum(1 for i in order if klass[i] == tight and not call_of[i][0])
    return tight, misses, len(served), refused, sum(1 for i in order if klass[i] == tight)


def render(sections) -> str:
    lines = ["# Tightest-class misses at overload, simulated", "",
             "Produced by `python experiments/overload_misses.py` (see its docstring for every column). One "
             "simulation per mix with adaptive and admission control; per served request of the tightest class "
             "that missed a target: which target, and why (the first cause that explains a TTFT miss).", ""]
    for name, qps, (tight, misses, served, refused, n) in sections:
        causes = Counter(m.cause for m in misses)
        lines += [f"## {name} at {qps:.2f} qps: class `{tight}`", "",
                  f"{n} requests: {refused} refused, {served} served, {len(misses)} of those missed "
                  f"(served attainment {(served - len(misses)) / served:.1%}). Causes: "
                  + (", ".join(f"{c} {k}" for c, k in causes.most_common()) or "none") + ".", ""]
        if misses:
            lines += ["| request | missed | cause | TTFT (ms) | forecast (ms) | own | ahead | of which late | overtakers | other | "
                      "achieved prompt tok/s | planned tok/s | decode share |",
                      "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for m in misses:
                lines.append(f"| {m.request} | {m.target} | {m.cause} | {m.ttft_s * 1e3:.0f} | {m.forecast_s * 1e3:.0f} | "
                             f"{m.own} | {m.ahead} | {m.late} | {m.overtakers} | {m.other} | {m.rate_tps:.0f} | "
                             f"{m.planned_tps:.0f} | {m.decode_share:.0%} |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="latency profile CSV")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of " + ", ".join(WORKLOADS))
    p.add_argument("--load", type=float, default=2.0, help="multiple of adaptive's SLO capacity (slo_classes.md)")
    p.add_argument("--qps", type=float, default=None, help="the rate instead (every mix)")
    p.add_argument("--num-requests", type=int, default=None, help="requests per workload (default: the file's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="one mix, 40 requests; print only")
    args = p.parse_args(argv)
    names = args.workloads.split(",")
    if args.smoke:
        names, args.num_requests = names[:1], 40
    model = latency_model(args.profile)
    blocks = default_kv_blocks(model, 16)
    sections = []
    for name in names:
        qps = args.qps if args.qps is not None else args.load * adaptive_capacity_qps(name)
        sections.append((name, qps, diagnose(name, qps, args.num_requests, args.seed, model, blocks)))
        print(f"{name}: done", flush=True)
    report = render(sections)
    print(report)
    if not args.smoke:
        RESULTS.joinpath("overload_misses.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
