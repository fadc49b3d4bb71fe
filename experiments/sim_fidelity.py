"""Simulator fidelity on CPU: simulated vs real TTFT and TBT percentiles of the embedded SmolLM2.

1. Real: the engine (SmolLM2-135M, float32, CPU, sarathi with a fixed budget) serves requests that
   arrive as a Poisson process in real time; every step's StepStats is kept.
2. Fit: a LinearLatencyModel, least squares over that run's own steps.
3. Simulated: the same arrivals and lengths through simulate() with the fitted model, the same
   scheduler settings, budget and KV cache.
Prints P50/P90/P99 of TTFT and TBT, real vs simulated; the full mode also writes
experiments/results/sim_fidelity.md and sim_fidelity.png (CDFs). Torch runs on --threads threads
(default 1) so that a busy machine disturbs the measured step times less.
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import date
from pathlib import Path

import numpy as np
import torch

from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.latency import LinearLatencyModel
from adaptive_sarathi.engine.latency.linear import FEATURES
from adaptive_sarathi.engine.simulator import simulate
from adaptive_sarathi.workloads import LogNormal, SyntheticLengths, Uniform, single_phase
from real_time import serve_in_real_time

RESULTS = Path(__file__).parent / "results"
PERCENTILES = (50, 90, 99)


def latencies(timelines) -> tuple[np.ndarray, np.ndarray]:
    """TTFTs and all token gaps, seconds."""
    ttft = np.array([t.first_token_time - t.arrival_time for t in timelines])
    gaps = [np.diff(t.token_times) for t in timelines]
    return ttft, np.concatenate(gaps) if gaps else np.empty(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="6 short requests, no results files (for CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-requests", type=int, default=None, help="default 40 (smoke: 6)")
    parser.add_argument("--qps", type=float, default=None, help="Poisson arrival rate (default 0.6; smoke: 8)")
    parser.add_argument("--token-budget", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n = args.num_requests or (6 if args.smoke else 40)
    qps = args.qps or (8.0 if args.smoke else 0.6)
    lengths = (SyntheticLengths(Uniform(8, 48), Uniform(2, 6)) if args.smoke
               else SyntheticLengths(LogNormal(96, 0.8, min=8, max=512), Uniform(8, 48)))
    workload = single_phase(lengths, qps, num_requests=n, seed=args.seed).generate()

    engine = create_engine(EngineArgs(device="cpu", dtype="float32", token_budget=args.token_budget, seed=args.seed))
    run = serve_in_real_time(engine, workload, args.seed)
    real_timelines, stats = [r.timeline for r in run.requests], run.stats
    model = LinearLatencyModel.fit(stats)
    fit_error = float(np.mean([abs(model.step_time(s.shape) - s.duration_s) / s.duration_s
                               for s in stats]))
    sim = simulate(workload, engine.scheduler.config, FixedBudget(args.token_budget), model,
                   num_kv_blocks=engine.executor.num_kv_blocks)

    real_ttft, real_tbt = latencies(real_timelines)
    sim_ttft, sim_tbt = latencies(sim.timelines)
    rows = []
    for name, real, simulated in (("TTFT", real_ttft, sim_ttft), ("TBT", real_tbt, sim_tbt)):
        for p in PERCENTILES:
            r, s = np.percentile(real, p) * 1e3, np.percentile(simulated, p) * 1e3
            rows.append(f"| {name} P{p} | {r:.1f} | {s:.1f} | {(s - r) / r:+.1%} |")
    table = "\n".join(["| latency | real ms | simulated ms | error |", "|---|---|---|---|", *rows])
    coefficients = ", ".join(f"{f}={c:.3g}" for f, c in zip(FEATURES, model.coefficients))
    print(table)
    print(f"{n} requests at {qps:g} qps, {len(stats)} real steps ({sim.num_steps} simulated); linear fit "
          f"mean abs. error {fit_error:.1%} per step; coefficients (s per unit): {coefficients}")
    if args.smoke:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure = RESULTS / "sim_fidelity.png"
    plot_cdfs(figure, real_ttft, sim_ttft, real_tbt, sim_tbt)
    (RESULTS / "sim_fidelity.md").write_text(
        f"# Simulator fidelity on CPU (SmolLM2-135M, float32)\n\n"
        f"Produced by `python experiments/sim_fidelity.py`: {n} requests (prompt lengths log-normal, median 96, "
        f"max 512; outputs uniform 8-48), Poisson arrivals at {qps:g} qps, sarathi with a fixed budget of "
        f"{args.token_budget} tokens, served in real time; then simulated with a linear latency model fitted to "
        f"that run's {len(stats)} StepStats (per-step mean abs. error {fit_error:.1%}).\n\n"
        f"Machine: {platform.processor() or platform.machine()} (1-minute load average {os.getloadavg()[0]:.1f} at "
        f"the end: other processes add noise to real step times), {args.threads} torch thread(s); torch "
        f"{torch.__version__}; date {date.today()}; seed {args.seed}.\n\n{table}\n\n"
        f"Fitted coefficients (seconds per unit): {coefficients}.\n\n![CDFs]({figure.name})\n")
    print(f"wrote {RESULTS / 'sim_fidelity.md'} and {figure}")


def plot_cdfs(path: Path, real_ttft, sim_ttft, real_tbt, sim_tbt) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name, real, simulated in ((axes[0], "TTFT", real_ttft, sim_ttft), (axes[1], "TBT", real_tbt, sim_tbt)):
        for values, label, style in ((real, "real engine", "-"), (simulated, "simulated", "--")):
            x = np.sort(values) * 1e3
            ax.plot(x, np.arange(1, len(x) + 1) / len(x), style, label=label)
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of samples")
        ax.set_title(f"{name} CDF")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
