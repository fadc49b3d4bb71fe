"""Tables and figures of experiments/real_gpu_slo.py: one call's report, and the merge of calls'
JSON files into the committed results table and figures."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.0f}"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def header(meta: dict) -> list[str]:
    """Markdown lines naming the machine, versions and flags of one call."""
    flags = " ".join(f"--{k.replace('_', '-')}={v}" for k, v in sorted(meta["flags"].items()) if v not in (None, False))
    slo = meta["slo"]
    return [f"- card: {meta['card']}", f"- date: {meta['date']}", f"- commit: {meta['commit']}",
            f"- torch: {meta['torch']}", f"- model: {meta['model']}",
            f"- SLO policy {slo['name']}: TTFT P{slo['ttft_percentile']:g} <= {slo['ttft_ms']:g} ms, "
            f"TBT P{slo['tbt_percentile']:g} <= {slo['tbt_ms']:g} ms",
            f"- engine: {meta['engine']}", f"- latency profile (prior and simulator): {meta['profile']}",
            f"- setup: {meta['setup_s']}", f"- flags: `{flags}`"]


def group_runs(runs: Iterable[dict]) -> dict[tuple[str, float], list[dict]]:
    """Measured runs (skipped ones left out) by (policy, rate), in first-seen order."""
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for run in runs:
        if "real" in run:
            groups[(run["policy"], run["rate_qps"])].append(run)
    return groups


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def verdict(runs: Sequence[dict]) -> str:
    """"holds" when every repeat meets every target, "fails" when none does, else "k/n hold"."""
    held = sum(bool(r["real"]["all_met"]) for r in runs)
    return "holds" if held == len(runs) else "fails" if held == 0 else f"{held}/{len(runs)} hold"


def summary_table(runs: Iterable[dict]) -> list[str]:
    """Per policy and rate over its repeats: attainment mean and spread, real and simulated P99s,
    the model's per-step error, decide() time and the verdict."""
    lines = ["| policy | qps | repeats | attainment mean | spread (max-min, points) | sim. attainment | "
             "P99 TTFT real / sim ms | P99 TBT real / sim ms | TTFT, TBT at target pct real ms | "
             "step error decode / mixed (median) | decide us mean / P99 | SLO verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (policy, rate), group in group_runs(runs).items():
        att = [r["real"]["attainment"] for r in group]
        real, sim = [r["real"] for r in group], [r["sim"] for r in group]
        lines.append(
            f"| {policy} | {rate:g} | {len(group)} | {_mean(att):.1%} | {(max(att) - min(att)) * 100:.1f} | "
            f"{_mean([s['attainment'] for s in sim]):.1%} | "
            f"{_ms(_mean([x['ttft']['p99'] for x in real]))} / {_ms(_mean([x['ttft']['p99'] for x in sim]))} | "
            f"{_ms(_mean([x['tbt']['p99'] for x in real]))} / {_ms(_mean([x['tbt']['p99'] for x in sim]))} | "
            f"{_ms(_mean([x['ttft_at_target_pct_s'] for x in real]))}, "
            f"{_ms(_mean([x['tbt_at_target_pct_s'] for x in real]))} | "
            f"{_num(_mean([r['model_error']['decode']['median'] for r in group]), '.1%')} / "
            f"{_num(_mean([r['model_error']['mixed']['median'] for r in group]), '.1%')} | "
            f"{_num(_mean([r['decide_us']['mean'] for r in group]), '.0f')} / "
            f"{_num(_mean([r['decide_us']['p99'] for r in group]), '.0f')} | {verdict(group)} |")
    return lines


def run_table(runs: Iterable[dict]) -> list[str]:
    """One line per run, skipped runs with their reason."""
    lines = ["| policy | qps | rep | wall s | attainment (sim) | TTFT P50/P90/P99 ms | TBT P50/P90/P99 ms | "
             "met TTFT, TBT | sim P99 TTFT, TBT ms | real/sim P99 TTFT, TBT | step error decode, mixed "
             "(median / P90) | online model error decode, mixed (median / P90) | decide us mean / P99 (CPU P99; "
             "without GC mean / P99) | "
             "observe us mean / P99 |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        if "real" not in r:
            lines.append(f"| {r['policy']} | {r['rate_qps']:g} | {r['repeat']} | skipped: {r['skipped']} "
                         "| | | | | | | | | | |")
            continue
        real, sim, e = r["real"], r["sim"], r["model_error"]
        lines.append(
            f"| {r['policy']} | {r['rate_qps']:g} | {r['repeat']} | {r['wall_s']:.1f} | "
            f"{real['attainment']:.1%} ({sim['attainment']:.1%}) | "
            + "/".join(_ms(real["ttft"][p]) for p in ("p50", "p90", "p99")) + " | "
            + "/".join(_ms(real["tbt"][p]) for p in ("p50", "p90", "p99")) + " | "
            f"{'yes' if real['ttft_met'] else 'no'}, {'yes' if real['tbt_met'] else 'no'} | "
            f"{_ms(sim['ttft']['p99'])}, {_ms(sim['tbt']['p99'])} | "
            f"{_num(r['real_over_sim']['ttft_p99'])}, {_num(r['real_over_sim']['tbt_p99'])} | "
            f"{_num(e['decode']['median'], '.1%')} / {_num(e['decode']['p90'], '.1%')}, "
            f"{_num(e['mixed']['median'], '.1%')} / {_num(e['mixed']['p90'], '.1%')} | "
            f"{_online_error(r.get('online_model_error'))} | "
            f"{_num(r['decide_us']['mean'], '.0f')} / {_num(r['decide_us']['p99'], '.0f')} "
            f"({_num(r.get('decide_cpu_us', {}).get('p99', math.nan), '.0f')}; "
            f"{_num(r.get('decide_without_gc_us', {}).get('mean', math.nan), '.0f')} / "
            f"{_num(r.get('decide_without_gc_us', {}).get('p99', math.nan), '.0f')}) | "
            f"{_num(r.get('observe_us', {}).get('mean', math.nan), '.0f')} / "
            f"{_num(r.get('observe_us', {}).get('p99', math.nan), '.0f')} |")

    return lines


def _online_error(e: dict | None) -> str:
    """The online model's errors of a run; '-' for policies without one (or older records)."""
    if not e:
        return "-"
    return (f"{_num(e['decode']['median'], '.1%')} / {_num(e['decode']['p90'], '.1%')}, "
            f"{_num(e['mixed']['median'], '.1%')} / {_num(e['mixed']['p90'], '.1%')}")


NOTES = ("Attainment: the fraction of requests meeting every target (TTFT within its target, and the "
         "request's own TBT percentile within the TBT target). A verdict holds when the TTFT at its "
         "percentile over requests and the TBT at its percentile over every token gap are both within "
         "target. Repeats serve the same drawn requests (lengths and arrival offsets), so their spread "
         "is the engine's run-to-run variability, not the workload's. Simulated: the same requests, "
         "policy spec, scheduler config and KV blocks through engine.simulator.simulate with the "
         "latency profile as model. Step error: |observed period / profile prediction - 1| per step. "
         "Online model error: the same for the adaptive policy's own online model, predicted before it "
         "learned the step, against what it learns from (executor time + the host gap before the step).")


def call_report(meta: dict, runs: Sequence[dict]) -> str:
    """The markdown report of one call."""
    return "\n".join(["# Controller vs declared SLOs on a real GPU (one call)", "", *header(meta), "",
                      "## Per policy and rate", "", *summary_table(runs), "", "## Per run", "", *run_table(runs),
                      "", NOTES, ""])


def merge(json_paths: Sequence[Path], results: Path) -> list[Path]:
    """Combine calls' JSON files into `results` (markdown), a merged JSON and two PNG figures
    beside it; returns the paths written. Raises ValueError naming the file when the calls ran
    different SLO policies or models (their numbers would not compare)."""
    calls = [json.loads(Path(p).read_text()) for p in json_paths]
    for path, call in zip(json_paths[1:], calls[1:]):
        for key in ("slo", "model"):
            if call["meta"][key] != calls[0]["meta"][key]:
                raise ValueError(f"{path}: its {key} differs from {json_paths[0]}'s; merge calls of one setup")
    runs = [r for call in calls for r in call["runs"]]
    results.parent.mkdir(parents=True, exist_ok=True)
    stem = results.with_suffix("")
    attainment_png = stem.with_name(stem.name + "_attainment.png")
    scatter_png = stem.with_name(stem.name + "_real_vs_sim.png")
    merged_json = stem.with_suffix(".json")
    plot_attainment(attainment_png, runs)
    plot_real_vs_sim(scatter_png, runs)
    merged_json.write_text(json.dumps({"calls": [c["meta"] for c in calls], "runs": runs}, indent=1))
    parts = ["# Controller vs declared SLOs on a real GPU", "",
             f"Produced by `python experiments/real_gpu_slo.py` in {len(calls)} call(s), merged with "
             f"`--merge {' '.join(Path(p).name for p in json_paths)}`; raw numbers in {merged_json.name}.", ""]
    for path, call in zip(json_paths, calls):
        parts += [f"## Call {Path(path).name}", "", *header(call["meta"]), ""]
    parts += ["## Per policy and rate", "", *summary_table(runs), "", NOTES, "",
              f"![attainment vs rate]({attainment_png.name})", "", f"![real vs simulated P99]({scatter_png.name})", "",
              "## Per run", "", *run_table(runs), ""]
    results.write_text("\n".join(parts))
    return [results, merged_json, attainment_png, scatter_png]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_attainment(path: Path, runs: Iterable[dict]) -> None:
    """Attainment vs rate per policy: mean over repeats, error bars to the min and max."""
    plt = _pyplot()
    by_policy: dict[str, list[tuple[float, list[float]]]] = defaultdict(list)
    for (policy, rate), group in group_runs(runs).items():
        by_policy[policy].append((rate, [r["real"]["attainment"] * 100 for r in group]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, points in by_policy.items():
        points.sort()
        rates = [p[0] for p in points]
        means = [sum(v) / len(v) for _, v in points]
        low = [m - min(v) for m, (_, v) in zip(means, points)]
        high = [max(v) - m for m, (_, v) in zip(means, points)]
        ax.errorbar(rates, means, yerr=[low, high], marker="o", capsize=3, label=policy)
    ax.set_xlabel("request rate (qps, Poisson)")
    ax.set_ylabel("requests meeting every target (%)")
    ax.set_title("SLO attainment, real engine (bars: min-max over repeats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_real_vs_sim(path: Path, runs: Iterable[dict]) -> None:
    """Real vs simulated P99 TTFT and P99 TBT, one point per run, with the y = x line."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    measured = [r for r in runs if "real" in r]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key in zip(axes, ("ttft", "tbt")):
        policies = list(dict.fromkeys(r["policy"] for r in measured))  # the attainment figure's colour order
        values = []
        for policy in policies:
            pts = [(r["sim"][key]["p99"] * 1e3, r["real"][key]["p99"] * 1e3) for r in measured if r["policy"] == policy]
            values += [v for p in pts for v in p]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=policy, s=18)
        if values:
            lo, hi = min(values), max(values)
            ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="y = x")
        ax.set_xlabel(f"simulated P99 {key.upper()} (ms)")
        ax.set_ylabel(f"real P99 {key.upper()} (ms)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
