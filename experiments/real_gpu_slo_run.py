"""One run of experiments/real_gpu_slo.py: a policy serves one drawn workload on the real engine in
real time, and the simulator predicts the same requests; the record of both, JSON-ready."""

from __future__ import annotations

import gc
import math
import time
from typing import Sequence

import numpy as np

from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import SLOPolicy
from adaptive_sarathi.engine.budget import BudgetPolicy, StepBudget
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.latency.fit_error import RatioError, fit_error
from adaptive_sarathi.engine.latency.from_step_log import step_rows
from adaptive_sarathi.engine.latency.shape import LatencyModel
from adaptive_sarathi.engine.simulator import SimulationResult, simulate
from adaptive_sarathi.engine.simulator.result import summarize
from adaptive_sarathi.engine.stats import EngineState, StepStats
from adaptive_sarathi.engine.step_log import records_from_stats
from adaptive_sarathi.scenario import slo_targets
from adaptive_sarathi.workloads import WorkloadRequest
from real_time import RealTimeRun, serve_in_real_time


class _GcPauses:
    """Total wall time spent in garbage collections since import (gc.callbacks)."""

    def __init__(self):
        self.total_ns = 0
        self._start = 0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            self.total_ns += time.perf_counter_ns() - self._start


_GC_PAUSES = _GcPauses()


class TimedPolicy(BudgetPolicy):
    """Delegates every BudgetPolicy method to `policy`, recording the wall time of every decide()
    call (nanoseconds, in `decide_ns`), its thread CPU time (`decide_cpu_ns`: leaves out time the
    OS or another thread took), the garbage collections that ran inside it (`decide_gc_ns`: the
    collector runs in whichever call allocates past its threshold, so this is the process's
    garbage, not the policy's own cost) and the wall time of every observe() (`observe_ns`). Before each
    observe(), a policy with an online latency model (`online_model`) has that model predict the
    step it is about to learn from (`online_pred_s`, one per observed step; NaN for policies
    without one), untimed."""

    def __init__(self, policy: BudgetPolicy):
        self.policy = policy
        self.decide_ns: list[int] = []
        self.decide_cpu_ns: list[int] = []
        self.decide_gc_ns: list[int] = []
        self.observe_ns: list[int] = []
        self.online_pred_s: list[float] = []

    def decide(self, state: EngineState) -> StepBudget:
        gc_before = _GC_PAUSES.total_ns
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        budget = self.policy.decide(state)
        self.decide_cpu_ns.append(time.thread_time_ns() - start_cpu)
        self.decide_ns.append(time.perf_counter_ns() - start)
        self.decide_gc_ns.append(_GC_PAUSES.total_ns - gc_before)
        return budget

    def observe(self, stats: StepStats) -> None:
        model = getattr(self.policy, "online_model", None)
        self.online_pred_s.append(model.step_time(stats.shape) if model is not None else math.nan)
        start = time.perf_counter_ns()
        self.policy.observe(stats)
        self.observe_ns.append(time.perf_counter_ns() - start)

    # The rest of the interface passes straight through: without these the engine would see the
    # base class's answers (no deadlines, every request admitted), not the timed policy's.
    def slo_targets(self):
        return self.policy.slo_targets()

    def admits(self, state: EngineState, num_prompt_tokens: int, slo_class: str | None = None) -> bool:
        return self.policy.admits(state, num_prompt_tokens, slo_class)

    def latency_model_error(self):
        return self.policy.latency_model_error()

    def prefill_rate_tps(self) -> float | None:
        return self.policy.prefill_rate_tps()

    @property
    def relegates_late(self) -> bool:
        return self.policy.relegates_late


def simulate_run(spec: str, slo: SLOPolicy, profile: LatencyModel, workload: Sequence[WorkloadRequest],
                 engine: LLMEngine, seed: int, admission: bool) -> SimulationResult:
    """The simulator's run of `workload` under a fresh `spec` policy, with the engine's scheduler
    config and KV blocks and `profile` as the latency model (and the policy's prior)."""
    return simulate(workload, engine.scheduler.config, make_policy(spec, slo, prior=profile, seed=seed), profile,
                    num_kv_blocks=engine.executor.num_kv_blocks, slo=slo_targets(slo), admission=admission)


def real_run(engine: LLMEngine, spec: str, slo: SLOPolicy, profile: LatencyModel,
             workload: Sequence[WorkloadRequest], seed: int, run_id: str,
             admission: bool) -> tuple[RealTimeRun, TimedPolicy]:
    """Serve `workload` in real time on `engine` (idle on entry, idle on return) under a fresh,
    timed `spec` policy, which stays installed as engine.policy afterwards; `admission` as in
    serve_in_real_time."""
    policy = TimedPolicy(make_policy(spec, slo, prior=profile, seed=seed))
    engine.policy = policy
    run = serve_in_real_time(engine, workload, seed, warm=False, id_prefix=f"{run_id}-", admission=admission)
    if engine.has_unfinished_requests():
        raise RuntimeError(f"run {run_id} left {engine.num_waiting + engine.num_running} requests in the engine")
    return run, policy


def summarize_real(run: RealTimeRun, slo: SLOPolicy) -> SimulationResult:
    """The real run in the simulator's result type: the same percentiles and SLO report code."""
    stats = run.stats
    return summarize(run.requests, sum(r.num_prompt_tokens for r in run.requests),
                     np.array([s.token_budget for s in stats], dtype=np.int64),
                     np.array([s.max_chunk for s in stats], dtype=np.int64),
                     np.array([s.num_decode_tokens + s.num_prefill_tokens for s in stats], dtype=np.int64),
                     slo_targets(slo), run.wall_s, None, None, refused_classes=run.refused_classes)


def run_record(spec: str, rate: float, repeat: int, run: RealTimeRun, policy: TimedPolicy, sim: SimulationResult,
               slo: SLOPolicy, profile: LatencyModel) -> dict:
    """Everything the report reads of one run (seconds, fractions; JSON-ready)."""
    real = summarize_real(run, slo)
    error = fit_error(profile, step_rows(records_from_stats(run.stats), "period"))
    real_d, sim_d = _result(real), _result(sim)
    return {
        "policy": spec, "rate_qps": rate, "repeat": repeat, "num_requests": len(run.requests),
        "wall_s": run.wall_s, "real": real_d, "sim": sim_d,
        "real_over_sim": {"ttft_p99": _ratio(real.ttft.p99, sim.ttft.p99), "tbt_p99": _ratio(real.tbt.p99, sim.tbt.p99),
                          "attainment": _ratio(real_d["attainment"], sim_d["attainment"])},
        "model_error": {"decode": _ratio_error(error.decode), "mixed": _ratio_error(error.mixed)},
        "online_model_error": _online_error(run.stats, policy.online_pred_s),
        "decide_us": _microseconds(policy.decide_ns), "decide_cpu_us": _microseconds(policy.decide_cpu_ns),
        "decide_gc_us": _microseconds(policy.decide_gc_ns),
        "decide_without_gc_us": _microseconds([d - g for d, g in zip(policy.decide_ns, policy.decide_gc_ns)]),
        "observe_us": _microseconds(policy.observe_ns),
    }


def _microseconds(ns: Sequence[int]) -> dict:
    us = np.array(ns, dtype=float) / 1e3
    return {"count": len(us), "mean": float(us.mean()) if len(us) else math.nan,
            "p99": float(np.percentile(us, 99)) if len(us) else math.nan}


def _online_error(stats: Sequence[StepStats], predicted_s: Sequence[float]) -> dict:
    """|observed / predicted - 1| of the policy's online model, predicted before it learned each
    step, against what it learns from (executor time + the host gap before the step; steps after
    an idle gap left out), decode-only and mixed steps apart; empty without an online model."""
    groups: dict[str, list[float]] = {"decode": [], "mixed": []}
    for s, pred in zip(stats, predicted_s):
        if s.host_gap_s is None or not pred > 0:
            continue
        groups["mixed" if s.shape.num_prefill_seqs else "decode"].append(
            abs((s.duration_s + s.host_gap_s) / pred - 1.0))
    if not any(groups.values()):
        return {}
    return {k: {"count": len(v), "median": float(np.median(v)) if v else math.nan,
                "p90": float(np.percentile(v, 90)) if v else math.nan} for k, v in groups.items()}


STEP_TRACE_FIELDS = ("run", "step", "prefill_tokens", "decode_tokens", "prefill_seqs", "context_tokens",
                     "decode_context_tokens", "executor_s", "host_gap_s", "period_s", "profile_pred_s",
                     "online_pred_s", "token_budget", "max_chunk", "reason")


def step_trace(run_id: str, run: RealTimeRun, policy: TimedPolicy, profile: LatencyModel) -> list[tuple]:
    """One row per step of a real run (STEP_TRACE_FIELDS): its shape, measured times, the
    profile's and the online model's predictions, and the budget with the policy's reason."""
    online = list(policy.online_pred_s) + [math.nan] * (len(run.stats) - len(policy.online_pred_s))
    rows = []
    for r, pred in zip(records_from_stats(run.stats), online):
        sh = r.shape
        rows.append((run_id, r.step_index, sh.num_prefill_tokens, sh.num_decode_tokens, sh.num_prefill_seqs,
                     sh.sum_context_tokens, sh.decode_context_tokens, r.duration_s, r.host_gap_s, r.period_s,
                     profile.step_time(sh), pred, r.token_budget, r.max_chunk, r.reason))
    return rows


def _result(result: SimulationResult) -> dict:
    """The fields the report uses of a run's result (real or simulated)."""
    report = result.slo
    d = {"num_steps": result.num_steps, "makespan_s": result.makespan_s, "num_preemptions": result.num_preemptions,
         "token_budget_mean": result.budget.token_budget_mean, "tokens_per_s": result.tokens_per_s}
    for name in ("ttft", "tbt"):
        p = getattr(result, name)
        d[name] = {"p50": p.p50, "p90": p.p90, "p99": p.p99}
    d.update({"attainment": report.attainment, "ttft_attainment": report.ttft_attainment,
              "tbt_gap_attainment": report.tbt_gap_attainment, "ttft_at_target_pct_s": report.ttft_p_s,
              "tbt_at_target_pct_s": report.tbt_p_s, "ttft_met": report.ttft_met, "tbt_met": report.tbt_met,
              "all_met": report.percentiles_met, "num_refused": result.num_refused,
              "per_class_attainment": {name: c.attainment for name, c in report.per_class.items()}})
    return d


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _ratio_error(e: RatioError) -> dict:
    return {"count": e.count, "median": e.median, "p90": e.p90}
