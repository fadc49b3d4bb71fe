"""The controller judged by the declared SLOs on a real GPU, beside the simulator's prediction.

One call builds ONE engine (dummy:llama-3-8b, bfloat16, CUDA graphs on) and reuses it for every
run, swapping the budget policy between runs (engine.policy; the engine is checked idle first).
Then for each repeat, each rate (--rates, Poisson qps) and each policy (--policies) it:
1. serves --num-requests requests drawn from --trace (workload_from_flags, the rule bench and
   simulate use; prompt + output <= --max-total-len) in real time: random prompt ids, EOS
   ignored, exactly the drawn output length. Every repeat serves the SAME draw (seed --seed), so
   the spread over repeats is the engine's run-to-run variability, not the workload's;
2. judges it by the SLO policy (--slo-policy) with the simulator's own SLO report code:
   attainment of each target (TTFT at its percentile over requests, TBT at its percentile over
   every token gap), P50/P90/P99 TTFT and TBT, the fraction of requests meeting every target,
   the verdict, the run's wall time;
3. measures the latency profile's per-step error over the run (|observed period / predicted - 1|,
   median and P90, decode-only and mixed steps) and decide()'s wall time per step;
4. simulates the same requests (same lengths and arrival offsets) with the same policy spec,
   scheduler config and KV blocks, the profile as latency model: simulated P99s and attainment,
   and real/simulated ratios.
The latency profile (prior of adaptive and the simulator's model) is --profile CSV, else
fitted (token-knots, step periods) from a calibration at the start of the call: bursts of
--calibration-requests requests under each of --calibration-budgets fixed budgets. The fitted
profile is saved to --out, so a second call can reuse it with --profile.

Outputs under --out (default $OUT): NAME.json (every run), NAME.md (tables), NAME_profile.csv
(when calibrated); rewritten after every run, so a call cut short keeps what it measured. The
call's wall time is estimated from the flags first (per run: the latest over requests of arrival
+ prefill at 20k tokens/s + decodes at --step-s; the calibration bursts' prefill added up; plus
--setup-s); a plan over --max-wall-s is refused (exit 2). While running, a run whose simulated
makespan (or estimate, if longer) no longer fits the time left is skipped and recorded so.

Two calls on an H200 (each estimated under --max-wall-s=520), every policy side by side in each,
one rate per call; the second reuses the first call's profile (copied where the call can read it),
then the merge on any machine:
  python experiments/real_gpu_slo.py --trace .whl/sharegpt_8k.csv --rates 12 --repeats 3 \
      --num-requests 100 --name real_gpu_slo_12qps --out $OUT
  python experiments/real_gpu_slo.py --trace .whl/sharegpt_8k.csv --rates 8 --repeats 3 \
      --num-requests 100 --profile .whl/real_gpu_slo_12qps_profile.csv --name real_gpu_slo_8qps --out $OUT
  python experiments/real_gpu_slo.py --merge A/real_gpu_slo_12qps.json B/real_gpu_slo_8qps.json \
      --results experiments/results/real_gpu_slo.md
--plan-only prints a plan's estimate and exits, on any machine.
--smoke: CPU, dummy:tiny, 2 policies x 1 rate x 2 repeats x 6 short requests, in seconds.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from adaptive_sarathi.controller.registry import PolicySpecError, make_policy
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.latency.from_step_log import fit_step_stats, write_fit
from adaptive_sarathi.engine.latency.profile import load_profile
from adaptive_sarathi.engine.step_log import deployment_tags
from adaptive_sarathi.server.gc_tuning import tune_garbage_collection
from adaptive_sarathi.workloads import SyntheticLengths, Uniform, WorkloadRequest, workload_from_flags
# Sibling modules: a script run from experiments/ imports them from its own folder.
from real_gpu_slo_report import call_report, merge
from real_gpu_slo_run import STEP_TRACE_FIELDS, real_run, run_record, simulate_run, step_trace
from real_time import serve_in_real_time, warm_up

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POLICIES = "fixed:512,fixed:1024,fixed:2048,adaptive"
# Planning guess for llama-3-8b bf16 prefill on one H200 over mixed chunk sizes (not a measurement
# this script relies on: the runtime check uses the simulated makespan).
PREFILL_TOKENS_PER_S = 20_000.0
SIM_S_PER_RUN = 1.5  # host seconds a simulation of one run takes, a planning allowance
EXIT_PLAN_TOO_LONG = 2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", help="request-length trace CSV (this or --workload, unless --smoke or --merge)")
    p.add_argument("--workload", type=Path, default=None,
                   help="workload YAML (e.g. with SLO classes) in place of --trace: its phases scaled to each "
                        "rate's mean, each cut to --num-requests requests")
    p.add_argument("--admission", action=argparse.BooleanOptionalAction, default=True,
                   help="offer each request on arrival and refuse (a miss) what the policy does not admit, as the "
                        "server answers 429; the simulator does the same")
    p.add_argument("--policies", default=None, help=f"comma-separated policy specs (default {DEFAULT_POLICIES})")
    p.add_argument("--rates", default=None, help="comma-separated Poisson rates, qps (default 8,12)")
    p.add_argument("--repeats", type=int, default=None, help="runs of each policy and rate (default 3)")
    p.add_argument("--num-requests", type=int, default=None, help="requests per run (default 150)")
    p.add_argument("--max-total-len", type=int, default=None,
                   help="prompt + output cap and the engine's window (default 8192)")
    p.add_argument("--slo-policy", default="llama-3-8b-h100-strict", help="SLO policy name or YAML file")
    p.add_argument("--profile", type=Path, default=None, help="latency profile CSV (default: calibrate)")
    p.add_argument("--calibration-requests", type=int, default=64, help="requests per calibration burst")
    p.add_argument("--calibration-budgets", default="512,1024,2048,4096,8192",
                   help="fixed budgets of the calibration bursts, comma-separated")
    p.add_argument("--calibration-max-output", type=int, default=192, help="output cap of calibration requests")
    p.add_argument("--model", default="dummy:llama-3-8b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default $OUT)")
    p.add_argument("--name", default="real_gpu_slo", help="stem of the output files")
    p.add_argument("--commit", default=None, help="commit to record (default: git rev-parse, else unknown)")
    p.add_argument("--max-wall-s", type=float, default=520.0, help="refuse plans estimated longer than this")
    p.add_argument("--setup-s", type=float, default=None,
                   help="estimated seconds to build and warm the engine (default 120; smoke: 5)")
    p.add_argument("--step-s", type=float, default=0.012, help="estimated seconds of one decode step (planning)")
    p.add_argument("--plan-only", action="store_true", help="print the plan's estimate and exit (no engine)")
    p.add_argument("--smoke", action="store_true", help="CPU, dummy:tiny, tiny plan; writes only with --out")
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="merge these calls' JSON files")
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "results" / "real_gpu_slo.md",
                   help="markdown file the merge writes (figures and merged JSON beside it)")
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = {"policies": "fixed:256,adaptive" if smoke else DEFAULT_POLICIES, "rates": "8" if smoke else "8,12",
                "repeats": 2 if smoke else 3, "num_requests": 6 if smoke else 150,
                "max_total_len": 512 if smoke else 8192, "setup_s": 5.0 if smoke else 120.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if smoke:
        args.model, args.device, args.dtype = "dummy:tiny", "cpu", "float32"
        args.calibration_budgets, args.calibration_requests, args.calibration_max_output = "128,256", 6, 4
    if args.out is None and not smoke and args.merge is None:
        if not os.environ.get("OUT"):
            p.error("--out: give an output folder (or set $OUT)")
        args.out = Path(os.environ["OUT"])
    if args.merge is None and not smoke and (args.trace is None) == (args.workload is None):
        p.error("--trace: give the request-length trace CSV (e.g. sharegpt_8k.csv) or a --workload YAML, one of them")
    for name in ("repeats", "num_requests", "calibration_requests", "calibration_max_output", "max_total_len"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}: use an integer >= 1")
    return args


def _list(text: str, kind, flag: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{flag}={text!r}: give comma-separated numbers") from None
    if not values or any(v <= 0 for v in values):
        raise SystemExit(f"{flag}={text!r}: give at least one value, each > 0")
    return values


def draw(args, rate: float, num_requests: int, seed: int, max_output: int | None = None) -> list[WorkloadRequest]:
    """The requests of one run: the trace or workload file (synthetic lengths in --smoke) at mean
    `rate`, seeded."""
    if args.workload is not None:
        spec = workload_from_flags(workload=args.workload, seed=seed).with_requests_per_phase(num_requests)
        drawn = spec.scaled(rate / spec.mean_qps).generate()
        cap = max_output or max(r.num_output_tokens for r in drawn)
        return [replace(r, num_output_tokens=min(r.num_output_tokens, cap)) for r in drawn]
    if args.smoke:
        source = {"lengths": SyntheticLengths(Uniform(8, 48), Uniform(2, 6))}
    else:
        source = {"trace": args.trace, "max_total_len": args.max_total_len}
    return list(workload_from_flags(**source, qps=rate, num_requests=num_requests, max_output_tokens=max_output,
                                    seed=seed).generate())


def estimate_run_s(workload: list[WorkloadRequest], step_s: float) -> float:
    """Planning estimate of a real run: the latest of arrival + prefill + decodes over requests."""
    return max(r.arrival_time_s + r.num_prompt_tokens / PREFILL_TOKENS_PER_S + r.num_output_tokens * step_s
               for r in workload)


def calibration_workload(args) -> list[WorkloadRequest]:
    """One calibration burst: requests of the trace, output-capped, all arriving at once."""
    drawn = draw(args, 1.0, args.calibration_requests, args.seed + 1000, args.calibration_max_output)
    return [WorkloadRequest(0.0, r.num_prompt_tokens, r.num_output_tokens) for r in drawn]


def calibrate(engine, args, budgets: list[int]):
    """Serve one burst per fixed budget and fit a period profile (token-knots) to every step."""
    burst = calibration_workload(args)
    stats = []
    for i, budget in enumerate(budgets):
        engine.policy = FixedBudget(budget)
        stats += serve_in_real_time(engine, burst, args.seed, warm=False, id_prefix=f"cal{i}-").stats
    return fit_step_stats(stats, deployment_tags(engine, args.model), seed=args.seed, source="calibration bursts "
                          f"of {len(burst)} requests at fixed budgets {','.join(map(str, budgets))}")


def commit_of(args) -> str:
    if args.commit:
        return args.commit
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_outputs(out: Path | None, name: str, meta: dict, runs: list[dict]) -> None:
    """Rewrite NAME.json and NAME.md under `out` (nothing when out is None)."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    for path, text in ((out / f"{name}.json", json.dumps({"meta": meta, "runs": runs}, indent=1)),
                       (out / f"{name}.md", call_report(meta, runs))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def append_step_trace(out: Path | None, name: str, rows: list[tuple]) -> None:
    """Append a run's step rows to NAME_steps.csv.gz under `out` (header on creation)."""
    if out is None:
        return
    path = out / f"{name}_steps.csv.gz"
    new = not path.exists()
    with gzip.open(path, "at", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(STEP_TRACE_FIELDS)
        writer.writerows(rows)


def main(argv=None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    if args.merge is not None:
        for path in merge(args.merge, args.results):
            print(f"wrote {path}")
        return 0
    policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    rates = _list(args.rates, float, "--rates")
    budgets = _list(args.calibration_budgets, int, "--calibration-budgets")
    slo = load_slo_policy(args.slo_policy)
    for spec in policies:  # a bad spec fails before the engine loads
        try:
            make_policy(spec, slo)
        except PolicySpecError as err:
            raise SystemExit(f"--policies: {err}") from None
    workloads = {rate: draw(args, rate, args.num_requests, args.seed) for rate in rates}
    plan = [(repeat, rate, spec) for repeat in range(args.repeats) for rate in rates for spec in policies]
    run_estimates = {rate: estimate_run_s(w, args.step_s) + SIM_S_PER_RUN for rate, w in workloads.items()}
    burst = calibration_workload(args)  # all at once: its prefill adds up, its decodes overlap
    burst_s = (sum(r.num_prompt_tokens for r in burst) / PREFILL_TOKENS_PER_S
               + max(r.num_output_tokens for r in burst) * args.step_s)
    calibration_s = 0.0 if args.profile else len(budgets) * burst_s
    estimate = args.setup_s + calibration_s + sum(run_estimates[rate] for _, rate, _ in plan)
    print(f"plan: {len(plan)} runs ({len(policies)} policies x {len(rates)} rates x {args.repeats} repeats, "
          f"{args.num_requests} requests each); estimated wall time {estimate:.0f} s (setup {args.setup_s:.0f} s, "
          f"calibration {calibration_s:.0f} s, runs " + ", ".join(f"{r:g} qps {s:.0f} s" for r, s in
                                                                 run_estimates.items()) + ")", flush=True)
    if estimate > args.max_wall_s:
        print(f"refused: the plan is estimated at {estimate:.0f} s, over --max-wall-s={args.max_wall_s:g}: lower "
              "--repeats, --num-requests or the number of policies/rates, or split it over calls", file=sys.stderr)
        return EXIT_PLAN_TOO_LONG
    if args.plan_only:
        return 0
    if args.profile is not None and not args.profile.is_file():  # fail before the engine loads
        raise SystemExit(f"--profile={args.profile}: no such file; give the profile CSV of an earlier call")

    torch.manual_seed(args.seed)
    t = time.monotonic()
    # Prefix caching off: the repeats (and the policies at one rate) serve the very same random
    # prompts on one engine, so a cache kept between runs would serve all but the first from it.
    engine = create_engine(EngineArgs(model=args.model, device=args.device, dtype=args.dtype,
                                      max_model_len=args.max_total_len, seed=args.seed,
                                      enable_prefix_caching=False))
    if engine.max_model_len < args.max_total_len:
        raise SystemExit(f"--max-total-len={args.max_total_len} exceeds the engine's window {engine.max_model_len}: "
                         f"use at most {engine.max_model_len}")
    warm_up(engine, args.seed)
    tune_garbage_collection()  # as `serve` does once its engine is built: the runs measure the served loop
    build_s = time.monotonic() - t
    t = time.monotonic()
    if args.profile is not None:
        profile, profile_note = load_profile(args.profile), f"{args.profile} (given)"
    else:
        fit = calibrate(engine, args, budgets)
        profile = fit.model
        profile_note = (f"calibrated in this call: {len(fit.rows)} step periods; error in-sample {fit.error}; "
                        f"held out {fit.holdout_error}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            write_fit(fit, args.out / f"{args.name}_profile.csv")
            profile_note += f"; saved as {args.name}_profile.csv"
    calibration_done_s = time.monotonic() - t
    print(f"engine built and warmed in {build_s:.1f} s; profile in {calibration_done_s:.1f} s: {profile_note}",
          flush=True)
    cuda = engine.executor.runner.device.type == "cuda" if hasattr(engine.executor, "runner") else False
    meta = {
        "card": torch.cuda.get_device_name() if cuda else "CPU (smoke: timings meaningless)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit_of(args),
        "torch": torch.__version__, "model": args.model,
        "slo": {"name": slo.name, "ttft_ms": slo.ttft.target_ms, "ttft_percentile": slo.ttft.percentile,
                "tbt_ms": slo.tbt.target_ms, "tbt_percentile": slo.tbt.percentile},
        "engine": f"{args.dtype} on {args.device}, {engine.executor.num_kv_blocks} KV blocks of "
                  f"{engine.executor.block_size} tokens, window {engine.max_model_len}, scheduler "
                  f"{engine.scheduler.config.name}",
        "profile": profile_note, "setup_s": f"engine {build_s:.1f} s, profile {calibration_done_s:.1f} s",
        "estimated_wall_s": estimate, "flags": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                                if k not in ("merge", "results")},
    }
    runs: list[dict] = []
    for repeat, rate, spec in plan:
        workload = workloads[rate]
        t = time.monotonic()
        sim = simulate_run(spec, slo, profile, workload, engine, args.seed, args.admission)
        sim_s = time.monotonic() - t
        needed = 1.15 * max(sim.makespan_s, run_estimates[rate] - SIM_S_PER_RUN) + 2.0
        left = args.max_wall_s - (time.monotonic() - started)
        if needed > left:
            reason = f"needed about {needed:.0f} s, {left:.0f} s left"
            runs.append({"policy": spec, "rate_qps": rate, "repeat": repeat, "skipped": reason})
            print(f"skip {spec} @ {rate:g} qps repeat {repeat}: {reason}", flush=True)
            continue
        run, timed = real_run(engine, spec, slo, profile, workload, args.seed, f"r{len(runs)}", args.admission)
        record = run_record(spec, rate, repeat, run, timed, sim, slo, profile)
        record["sim_host_s"] = sim_s
        record["run_id"] = f"r{len(runs)}"
        append_step_trace(args.out, args.name, step_trace(record["run_id"], run, timed, profile))
        runs.append(record)
        real = record["real"]
        print(f"{spec} @ {rate:g} qps repeat {repeat}: attainment {real['attainment']:.1%} (sim "
              f"{record['sim']['attainment']:.1%}), P99 TTFT {real['ttft']['p99'] * 1e3:.0f} ms (sim "
              f"{sim.ttft.p99 * 1e3:.0f}), P99 TBT {real['tbt']['p99'] * 1e3:.1f} ms (sim {sim.tbt.p99 * 1e3:.1f}), "
              f"all targets {'met' if real['all_met'] else 'missed'}; wall {run.wall_s:.1f} s", flush=True)
        meta["elapsed_s"] = time.monotonic() - started
        write_outputs(args.out, args.name, meta, runs)
    meta["elapsed_s"] = time.monotonic() - started
    write_outputs(args.out, args.name, meta, runs)
    print(f"done in {meta['elapsed_s']:.0f} s" + (f"; wrote {args.out}/{args.name}.json and .md" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
