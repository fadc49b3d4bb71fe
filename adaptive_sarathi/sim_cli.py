"""The `simulate`, `capacity` and `tune` subcommands: the engine's scheduler and controller over a
latency model, on a trace or a phased workload."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from adaptive_sarathi import exit_codes
from adaptive_sarathi.json_values import json_safe
from adaptive_sarathi.engine.config import SCHEDULER_NAMES

SIMULATION_COMMANDS = ("simulate", "capacity", "tune")
_DEFAULT_NUM_REQUESTS = 1000


def add_simulation_commands(sub: argparse._SubParsersAction) -> None:
    """Register `simulate` and `capacity` on the CLI's subparsers."""
    sim = sub.add_parser("simulate", help="simulate serving a workload on a latency model (no GPU needed)",
                         description="Run the engine's scheduler and budget controller on a latency model and a "
                                     "virtual clock; print latency percentiles, SLO attainment, goodput, "
                                     "throughput and token-budget statistics.")
    cap = sub.add_parser("capacity", help="search the highest request rate that keeps the SLOs (simulated)",
                         description="Search the highest rate at which every declared SLO target holds at its "
                                     "percentile (SLO capacity: TTFT over requests, TBT over every token gap), "
                                     "and from the same simulations Sarathi-Serve's capacity, a proxy (P99 TBT <= "
                                     "the TBT target and median scheduling delay <= 2 s), and the highest rate at "
                                     "which --min-attainment of requests meet every SLO (goodput). A phased "
                                     "workload has every phase's qps scaled by one factor.")
    tune = sub.add_parser("tune", help="tune the budget policy's hyperparameters offline (Optuna over the simulator)",
                          description="Run a seeded Optuna (TPE) study over the adaptive policy's hyperparameters "
                                      "(or a fixed budget, --tune-policy fixed), each trial scored by simulated "
                                      "capacity (or goodput at --qps); the defaults are trial 0. Writes the best "
                                      "parameters to a seed file keyed by GPU, model and tensor-parallel size, "
                                      "which serve/simulate/capacity read with --policy-seed.")
    for p in (sim, cap):
        _add_flags(p)
    _add_flags(tune, tuning=True)
    cap.add_argument("--min-attainment", type=float, default=0.9,
                     help="fraction of requests that must meet every SLO for the goodput rate (default 0.9)")
    cap.add_argument("--tolerance", type=float, default=0.02, help="relative precision of the search (default 0.02)")
    t = tune.add_argument_group("tuning")
    t.add_argument("--trials", type=int, default=20, help="Optuna trials, the defaults included (default 20)")
    t.add_argument("--objective", default="capacity", choices=("capacity", "proxy", "goodput"),
                   help="capacity: SLO capacity, the highest rate at which every declared target holds at its "
                        "percentile (searched from --qps); proxy: Sarathi-Serve's capacity (P99 TBT and 2 s "
                        "median scheduling delay); goodput: requests/s meeting every SLO at --qps (default "
                        "capacity)")
    t.add_argument("--tune-policy", default="adaptive", choices=("adaptive", "fixed"),
                   help="what to tune: the adaptive policy's hyperparameters or, as a baseline, a fixed budget")
    t.add_argument("--tolerance", type=float, default=0.05, help="relative precision of each trial's capacity "
                                                                 "search (default 0.05: coarse, so trials stay cheap)")
    t.add_argument("--out", type=Path, default=Path("policy_seeds.yaml"),
                   help="seed file to write (entries for other GPUs/models in it are kept)")
    t.add_argument("--gpu", default=None, help="GPU name of the seed entry (default: from --roofline or the "
                                                "profile's gpu tag)")
    t.add_argument("--model-name", default=None, help="model name of the seed entry (default: from --roofline or "
                                                       "the profile's model tag)")
    t.add_argument("--storage", default=None,
                   help="Optuna RDB URL to keep the study in, e.g. sqlite:///study.db: every finished trial is "
                        "saved, and a rerun with the same --study-name resumes it up to --trials (default: memory)")
    t.add_argument("--study-name", default=None, help="name of the study in --storage (required with it)")
    t.add_argument("--plots", default=None, type=Path,
                   help="folder to write optimization_history.png and param_importances.png to (needs matplotlib)")


def _add_flags(p: argparse.ArgumentParser, tuning: bool = False) -> None:
    """The workload, engine, latency-model and output flags; `tuning` leaves out the policy flags
    (tune sets the policy of every trial itself)."""
    w = p.add_argument_group("workload (give --trace, --workload or --replay)")
    w.add_argument("--trace", default=None,
                   help="request-length CSV (num_prefill_tokens,num_decode_tokens) or a name in ../shared/traces, "
                        "e.g. sharegpt_8k")
    w.add_argument("--workload", default=None, type=Path,
                   help="phased workload YAML, or the name of an example in examples/workloads (chat, summarize, phases, chat_and_batch): phases: [{trace: NAME|CSV (or synthetic: {prompt: .., output: ..}), "
                        "qps: Q, duration_s: S (or num_requests: N), slo_class: NAME}, ...]; a phase may be a mix: of "
                        "components drawn by share (docs/workloads.md)")
    w.add_argument("--replay", default=None, type=Path,
                   help="the requests a `bench --json` file recorded (arrival times, prompt and output lengths), "
                        "exactly as sent")
    w.add_argument("--qps", type=float, default=None,
                   help="mean request rate with --trace (capacity: where the search starts, default 1)")
    w.add_argument("--num-requests", type=int, default=None, help=f"requests with --trace (default {_DEFAULT_NUM_REQUESTS})")
    w.add_argument("--cv", type=float, default=None, help="arrival gap variation with --trace: 1 = Poisson (default), "
                                                           "other values gamma gaps")
    w.add_argument("--max-prompt-tokens", type=int, default=None, help="cap on prompt lengths with --trace")
    w.add_argument("--max-output-tokens", type=int, default=None, help="cap on output lengths with --trace")
    w.add_argument("--max-total-len", type=int, default=None,
                   help="with --trace: leave out rows whose prompt + output exceed this many tokens (as bench does)")
    w.add_argument("--seed", type=int, default=0, help="seed of arrivals, lengths and policies")
    e = p.add_argument_group("engine")
    e.add_argument("--scheduler", default="sarathi", choices=SCHEDULER_NAMES)
    if not tuning:
        e.add_argument("--policy", default="fixed:512", help="budget policy: fixed:<budget>[:<chunk>][:edf], "
                                                             "adaptive, two_level[:<low>:<high>], slack")
    e.add_argument("--slo-policy", default=None, help="SLO policy YAML, or the name of a shipped one")
    e.add_argument("--slo", default=None, help="SLO shorthand ttft:MS,tbt:MS (each optionally @pNN)")
    e.add_argument("--max-num-seqs", type=int, default=256)
    e.add_argument("--max-model-len", type=int, default=32768, help="context window in tokens")
    e.add_argument("--block-size", type=int, default=16)
    e.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false",
                   help="compute every prompt in full (prefix caching is on by default; workloads without token ids "
                        "share nothing, so only a preempted request's own blocks are reused)")
    e.add_argument("--no-admission", dest="admission", action="store_false",
                   help="queue every request; by default a request the budget policy does not admit on arrival is "
                        "refused and counted as a miss, as the server answers it 429")
    e.add_argument("--num-kv-blocks", type=int, default=None,
                   help="KV cache blocks (default: what the modelled GPU holds at 90%% memory)")
    m = p.add_argument_group("latency model (give one)")
    m.add_argument("--profile", default=None, help="measured latency profile CSV")
    m.add_argument("--roofline", default=None, help="roofline model GPU:ARCH, e.g. h100:llama-3-8b")
    m.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="GPUs the model is split over: the roofline model splits weights, KV and FLOPs and adds "
                        "the all-reduces; a --profile must have been measured at this size")
    if not tuning:
        e.add_argument("--policy-seed", default=None, type=Path,
                       help="seed file from `adaptive-sarathi tune`: the adaptive policy starts from the entry for "
                            "this GPU, model and tensor-parallel size (defaults when none matches)")
    o = p.add_argument_group("output")
    o.add_argument("--json", default=None, type=Path, help="write the results to this JSON file")
    o.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_simulation_command(args: argparse.Namespace) -> int:
    """Run `simulate` or `capacity`; returns the exit code (exit_codes.USAGE with a message on bad input)."""
    try:
        scenario = _scenario(args)
        if args.command == "tune":
            return _tune(args, scenario)
        if args.command == "simulate":
            result = scenario.run(progress=not args.no_progress)
            print(format_simulation(result))
            payload = result.to_dict()
        else:
            from adaptive_sarathi.capacity import find_capacity

            outcome = find_capacity(scenario, rel_tol=args.tolerance, min_attainment=args.min_attainment,
                                    progress=not args.no_progress)
            print(format_capacity(outcome))
            payload = outcome.to_dict()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE
    if args.json is not None:
        payload = {"command": args.command, "config": _config(args, scenario), **payload}
        args.json.write_text(json.dumps(json_safe(payload), indent=2))
    return exit_codes.OK


def _scenario(args: argparse.Namespace):
    # Imported here so that `--help` and argument errors answer without loading the engine.
    from adaptive_sarathi.controller.slo import slo_from_flags
    from adaptive_sarathi.engine.config import SchedulerConfig
    from adaptive_sarathi.scenario import Scenario, default_kv_blocks, latency_model

    slo = slo_from_flags(args.slo, args.slo_policy)
    model = _tensor_parallel(latency_model(args.profile, args.roofline), args.tensor_parallel_size)
    config = SchedulerConfig(name=args.scheduler, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                             block_size=args.block_size, enable_prefix_caching=args.enable_prefix_caching)
    if args.num_kv_blocks is not None and args.num_kv_blocks < 1:
        raise ValueError(f"--num-kv-blocks={args.num_kv_blocks} is invalid: use an integer >= 1")
    blocks = args.num_kv_blocks if args.num_kv_blocks is not None else default_kv_blocks(model, args.block_size)
    params = None
    policy = getattr(args, "policy", "adaptive")  # tune sets each trial's policy itself
    if getattr(args, "policy_seed", None) is not None:
        from adaptive_sarathi.controller.seed_store import seed_params

        gpu, name = deployment(args, model)
        params = seed_params(args.policy_seed, gpu, name, args.tensor_parallel_size)
        if params is None:
            print(f"note: {args.policy_seed} has no adaptive entry for gpu={gpu}, model={name}, tensor_parallel_size="
                  f"{args.tensor_parallel_size}: using the default hyperparameters", file=sys.stderr)
    return Scenario(_workload(args), config, policy, model, blocks, slo, args.seed, policy_params=params,
                    admission=args.admission)


def deployment(args: argparse.Namespace, model) -> tuple[str | None, str | None]:
    """(GPU, model) names of the modelled deployment: --gpu/--model-name when given, else from
    --roofline GPU:ARCH, else the profile's gpu/model tags; None where nothing says."""
    gpu, name = getattr(args, "gpu", None), getattr(args, "model_name", None)
    if args.roofline:
        g, _, arch = args.roofline.partition(":")
        return gpu or g.lower(), name or arch
    tags = getattr(model, "tags", {}) or {}
    return gpu or tags.get("gpu") or None, name or (tags.get("model", "").removeprefix("dummy:") or None)


def _tune(args: argparse.Namespace, scenario) -> int:
    from tqdm import tqdm

    from adaptive_sarathi.controller.seed_store import SeedEntry, save_seed
    from adaptive_sarathi.tuning import tune_scenario

    gpu, name = deployment(args, scenario.latency_model)
    if gpu is None or name is None:
        raise ValueError("cannot tell the GPU and model of this profile: pass --gpu NAME and --model-name NAME")
    if args.plots is not None:
        from adaptive_sarathi.tune_plots import require_matplotlib

        require_matplotlib()  # before the study, not after an hour of trials
    bar = tqdm(total=args.trials, desc="tune", unit="trial", disable=args.no_progress)
    best, new = [float("-inf")], []

    def on_trial(record) -> None:
        best[0] = max(best[0], record.value)
        new.append(record)
        bar.update(1)
        bar.set_postfix(value=f"{record.value:.3g}", best=f"{best[0]:.3g}")

    with bar:
        result = tune_scenario(scenario, policy=args.tune_policy, objective=args.objective, qps=args.qps,
                               trials=args.trials, seed=args.seed, rel_tol=args.tolerance, on_trial=on_trial,
                               progress=not args.no_progress, storage=args.storage, study_name=args.study_name)
    unit = "goodput req/s" if args.objective == "goodput" else "qps"
    resumed = len(result.trials) - len(new)
    print(f"{args.tune_policy} {args.objective}: defaults {result.default_value:.3f} {unit}, best "
          f"{result.best_value:.3f} {unit} ({result.improvement:.3f}x) after {len(result.trials)} trials"
          + (f" ({resumed} from {args.storage}, study {args.study_name})" if resumed else ""))
    print("best params: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in result.best_params.items()))
    if result.importances:
        print("importances: " + ", ".join(f"{k}={v:.2f}" for k, v in result.importances.items()))
    params = {k: v for k, v in result.best_params.items() if v is not None}
    save_seed(args.out, SeedEntry(gpu=gpu, model=name, policy=args.tune_policy, params=params,
                                  tensor_parallel_size=args.tensor_parallel_size, objective=args.objective,
                                  value=round(result.best_value, 4),
                                  workload=str(args.trace or args.workload or args.replay),
                                  slo=scenario.slo.name if scenario.slo is not None else "",
                                  extra={"default_value": round(result.default_value, 4), "trials": args.trials,
                                         "seed": args.seed}))
    print(f"wrote {args.out}")
    if args.plots is not None:
        from adaptive_sarathi.tune_plots import write_tune_plots

        for path in write_tune_plots(result, args.plots):
            print(f"wrote {path}")
    if args.json is not None:
        args.json.write_text(json.dumps(json_safe({"command": "tune", "config": _config(args, scenario),
                                                    "policy": result.policy, "objective": result.objective,
                                                    "best_params": result.best_params,
                                                    "best_value": result.best_value,
                                                    "default_value": result.default_value,
                                                    "importances": result.importances,
                                                    "trials": [vars(t) for t in result.trials]}), indent=2))
    return exit_codes.OK


def _tensor_parallel(model, size: int):
    """The latency model at `size` ranks: a roofline model rebuilt for it; a profile checked
    against the size it was measured at (its tensor_parallel_size tag, 1 when absent). Raises
    ValueError naming --tensor-parallel-size."""
    import dataclasses

    from adaptive_sarathi.engine.latency.profile import ProfileLatencyModel
    from adaptive_sarathi.engine.latency.roofline import RooflineModel

    if size < 1:
        raise ValueError(f"--tensor-parallel-size={size} is invalid: use an integer >= 1")
    if isinstance(model, RooflineModel):
        return model if size == 1 else dataclasses.replace(model, tensor_parallel_size=size)
    if isinstance(model, ProfileLatencyModel):
        measured = int(model.tags.get("tensor_parallel_size", "1"))
        if measured != size:
            raise ValueError(f"--tensor-parallel-size={size} but the profile was measured at tensor_parallel_size="
                             f"{measured}: profile at {size} (adaptive-sarathi profile --tensor-parallel-size "
                             f"{size}) or pass --tensor-parallel-size {measured}")
    return model


def _workload(args: argparse.Namespace):
    """The workload the flags ask for (workloads.workload_from_flags, the rule bench shares), or
    the requests a bench JSON file recorded."""
    from adaptive_sarathi.workloads import RecordedWorkload, workload_from_flags

    replay = getattr(args, "replay", None)
    if replay is not None:
        if args.trace is not None or args.workload is not None:
            raise ValueError("give exactly one workload: --trace, --workload or --replay")
        given = [flag for flag, value in _single_phase_flags(args).items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only for --trace; --replay sends the recorded requests as they were")
        from adaptive_sarathi.bench.record import read_requests

        recorded = RecordedWorkload(tuple(read_requests(replay)), str(replay))
        if args.command != "simulate" and not math.isfinite(recorded.mean_qps):
            raise ValueError(f"{replay} sent every request at once (bench --qps inf): {args.command} scales arrival "
                             "times, so record a run with a finite --qps")
        return recorded
    if args.trace is not None and args.qps is None and args.command == "simulate":
        raise ValueError("--trace needs --qps, the mean request rate (requests per second)")
    qps, num_requests = args.qps, args.num_requests
    if args.trace is not None:
        qps = 1.0 if qps is None else qps
        num_requests = num_requests or _DEFAULT_NUM_REQUESTS
    return workload_from_flags(trace=args.trace, workload=args.workload, qps=qps, num_requests=num_requests,
                               cv=args.cv, max_prompt_tokens=args.max_prompt_tokens,
                               max_output_tokens=args.max_output_tokens, max_total_len=args.max_total_len,
                               seed=args.seed)


def _single_phase_flags(args: argparse.Namespace) -> dict:
    return {"--qps": args.qps, "--num-requests": args.num_requests, "--cv": args.cv,
            "--max-prompt-tokens": args.max_prompt_tokens, "--max-output-tokens": args.max_output_tokens,
            "--max-total-len": args.max_total_len}


def _config(args: argparse.Namespace, scenario) -> dict:
    """The run's settings, for the JSON file."""
    return {"trace": args.trace, "workload": None if args.workload is None else str(args.workload),
            "replay": None if args.replay is None else str(args.replay),
            "qps": scenario.workload.mean_qps, "scheduler": args.scheduler, "policy": scenario.policy,
            "slo": None if scenario.slo is None else scenario.slo.name, "profile": args.profile,
            "roofline": args.roofline, "tensor_parallel_size": args.tensor_parallel_size, "num_kv_blocks": scenario.num_kv_blocks, "seed": args.seed,
            "enable_prefix_caching": args.enable_prefix_caching}


def format_simulation(r) -> str:
    """A SimulationResult as the table `simulate` prints."""
    refused = f" ({r.num_refused} more refused at admission)" if r.num_refused else ""
    lines = [f"{r.num_requests} requests served{refused}, {r.num_steps} steps, {r.makespan_s:.1f} s simulated "
             f"({r.wall_time_s:.1f} s host time)",
             f"{'':22}{'P50':>10}{'P90':>10}{'P99':>10}{'mean':>10}"]
    for name, p in (("TTFT (ms)", r.ttft), ("TBT (ms)", r.tbt), ("scheduling delay (ms)", r.scheduling_delay),
                    ("E2E (ms)", r.e2e)):
        lines.append(f"{name:22}" + "".join(f"{v * 1e3:10.1f}" for v in (p.p50, p.p90, p.p99, p.mean)))
    if r.slo is not None:
        lines += format_slo_report(r.slo)
    lines.append(f"throughput {r.requests_per_s:.2f} req/s, {r.tokens_per_s:.0f} tokens/s "
                 f"({r.output_tokens_per_s:.0f} output tokens/s), {r.num_preemptions} preemptions")
    b = r.budget
    lines.append(f"token budget mean {b.token_budget_mean:.0f} [{b.token_budget_min}, {b.token_budget_max}], "
                 f"chunk mean {b.max_chunk_mean:.0f} [{b.max_chunk_min}, {b.max_chunk_max}], "
                 f"tokens per step mean {b.tokens_per_step_mean:.0f}")
    return "\n".join(lines)


def format_slo_report(slo) -> list[str]:
    """An SloReport as lines: each declared target's observed percentile, whether it holds and
    its attainment; then whether all hold, the requests meeting every target and goodput. With
    SLO classes: one line per class (its own targets over its own requests and gaps), then
    whether every class meets its targets."""
    if slo.per_class:
        lines = [format_class_line(name, r.num_requests, r.attainment, r.targets, r.ttft_p_s, r.ttft_met, r.tbt_p_s,
                                   r.tbt_met, r.num_refused) for name, r in slo.per_class.items()]
        lines.append(f"SLO every class meets its targets: {'yes' if slo.percentiles_met else 'no'}; "
                     f"{slo.attainment:.1%} of requests meet their class's targets, goodput {slo.goodput_rps:.2f} "
                     "req/s")
        return lines
    t = slo.targets
    lines = []
    if t.ttft_s is not None:
        lines.append(f"SLO TTFT P{t.ttft_percentile:g} <= {t.ttft_s * 1e3:g} ms: observed {_ms(slo.ttft_p_s)}, "
                     f"{_holds(slo.ttft_met)}; {slo.ttft_attainment:.1%} of requests within")
    if t.tbt_s is not None:
        lines.append(f"SLO TBT P{t.tbt_percentile:g} <= {t.tbt_s * 1e3:g} ms (over every token gap): observed "
                     f"{_ms(slo.tbt_p_s)}, {_holds(slo.tbt_met)}; {slo.tbt_gap_attainment:.1%} of gaps within, "
                     f"{slo.tbt_attainment:.1%} of requests (own P{t.tbt_percentile:g} gap)")
    lines.append(f"SLO every target holds: {'yes' if slo.percentiles_met else 'no'}; {slo.attainment:.1%} of "
                 f"requests meet every target, goodput {slo.goodput_rps:.2f} req/s")
    return lines


def format_class_line(name: str, num_requests: int, attainment: float, targets, ttft_p_s, ttft_met, tbt_p_s,
                      tbt_met, num_refused: int = 0) -> str:
    """One SLO class as a line: each declared target of the class, the observed value at its
    percentile (TTFT over the class's requests, TBT over its gaps), whether it holds, and the
    class's requests meeting every target (num_refused of num_requests were refused: misses)."""
    parts = []
    if targets.ttft_s is not None:
        parts.append(f"TTFT P{targets.ttft_percentile:g} {_ms(ttft_p_s)} <= {targets.ttft_s * 1e3:g} ms "
                     f"{_holds(ttft_met)}")
    if targets.tbt_s is not None:
        parts.append(f"TBT P{targets.tbt_percentile:g} {_ms(tbt_p_s)} <= {targets.tbt_s * 1e3:g} ms "
                     f"{_holds(tbt_met)}")
    refused = f", {num_refused} refused" if num_refused else ""
    return (f"SLO class {name} ({num_requests} requests{refused}): {', '.join(parts)}; {attainment:.1%} of its requests "
            "meet every target")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if math.isfinite(seconds) else str(seconds)


def _holds(met: bool) -> str:
    return "holds" if met else "MISSED"


def format_capacity(c) -> str:
    """A CapacityResult as the summary `capacity` prints."""
    targets = (f"TTFT P{c.ttft_percentile:g} <= {c.ttft_slo_s * 1e3:g} ms and TBT P{c.tbt_percentile:g} <= "
               f"{c.tbt_slo_s * 1e3:g} ms over every token gap")
    if c.per_class:
        targets = "every class meets its own targets, TTFT over its requests and TBT over its token gaps"
    lines = [f"SLO capacity {c.slo_capacity_qps:.3g} qps (every target holds: {targets})",
             f"proxy capacity {c.capacity_qps:.3g} qps (Sarathi-Serve's: P99 TBT <= {c.tbt_slo_s * 1e3:g} ms, median "
             f"scheduling delay <= 2 s; ignores the TTFT target)",
             f"goodput rate {c.goodput_qps:.3g} qps (>= {c.min_attainment:.0%} of requests meet every SLO)",
             f"search: {len(c.probes)} simulations, {c.wall_time_s:.1f} s host time"]
    if c.per_class:
        lines[1:1] = [f"  at {c.slo_capacity_qps:.3g} qps: " + format_class_line(
            name, p.num_requests, p.attainment, p.targets, p.ttft_p_s, p.ttft_met, p.tbt_p_s, p.tbt_met)
            for name, p in c.per_class.items()]
    # The proxy reads P99 TBT; a separate column only when the declared TBT percentile differs.
    proxy_column = c.tbt_percentile != 99
    lines.append(f"{'qps':>10}{f'P{c.ttft_percentile:g} TTFT ms':>15}{f'P{c.tbt_percentile:g} TBT ms':>13}"
                 + (f"{'P99 TBT ms':>12}" if proxy_column else "")
                 + f"{'P50 delay s':>13}{'attain':>8}  {'slo':>4} {'proxy':>5} goodput")
    for name, attr in (("SLO capacity", "meets_slo"), ("proxy capacity", "meets_capacity"),
                       ("goodput rate", "meets_goodput")):
        if c.probes and all(getattr(p, attr) for p in c.probes):
            lines.append(f"note: no rate tried broke the {name} criteria, so it is the search's ceiling"
                         + ("; the workload may be too short to queue for 2 s at any rate: use more requests"
                            if attr == "meets_capacity" else ""))
    for p in c.probes:
        lines.append(f"{p.qps:10.3g}{p.ttft_p_s * 1e3:15.1f}{p.tbt_p_s * 1e3:13.1f}"
                     + (f"{p.tbt_p99_s * 1e3:12.1f}" if proxy_column else "")
                     + f"{p.scheduling_delay_p50_s:13.2f}{p.slo_attainment:8.1%}  {_ok(p.meets_slo):>4} "
                     f"{_ok(p.meets_capacity):>5} {_ok(p.meets_goodput):>7}")
    return "\n".join(lines)


def _ok(passed: bool) -> str:
    return "ok" if passed else "-"
