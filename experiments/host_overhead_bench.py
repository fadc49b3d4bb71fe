"""Host overhead per decode step: what the CPU does while the GPU waits, measured on the CPU.

On an H100 with Llama-3-8B a decode-only step of 64 requests replays a CUDA graph in ~8.4 ms, and
the host adds ~1.5 ms around it (experiments/results/gpu_performance.md). This script times the
pure-Python parts of that host work, without a GPU, at 64/128/256 requests decoding with contexts
of about 2048 tokens (block size 16, so ~128 blocks per block table):

  (a) LLMEngine.step() minus the executor: the engine built as the simulator builds it (sarathi
      scheduler, a budget policy, no tokenizer, as the GPU benchmark's dummy-weight model has
      none), over a SimulatedExecutor with a constant 10 ms latency model on a virtual clock. The
      executor's own time is measured around each call and subtracted. A second, instrumented pass
      breaks the rest down: state snapshot, policy (decide + observe), schedule, update, and the
      remainder (step stats, token latencies, RequestOutputs).
  (b) prepare_inputs(batch, 16) on the decode-only batch the scheduler produced.
  (c) the host part of sample(): on the GPU its tensor ops are device work, but the Python around
      them and each op's dispatch are host work. Timed on CPU logits with a tiny vocabulary
      (SAMPLE_VOCAB) so that the tensor arithmetic is negligible and what remains is the per-call
      and per-row overhead (a lower bound for the GPU, where a launch costs more than a CPU op's
      dispatch, and temperature rows also synchronize). Greedy, and temperature 0.7 / top-p 0.9.

The requests have produced about 20 to 620 tokens each while timed (prompts are shortened so that the
contexts still average about 2048 tokens), which matters for the RequestOutputs: each carries a
copy of its request's output tokens. A row for the garbage collector gives the mean time per step
it ran inside step() (it runs in some steps only, so the medians above hide most of it).

Every number is a median over many steps (calls), in microseconds of wall time; each size is
measured --repeats times and each part keeps its lowest median (the one other processes on the
host disturbed least). The code measured is whatever `adaptive_sarathi` resolves to, so a
"before" column can be taken from a copy of the old tree put first on PYTHONPATH; --label names
the column and the results file keeps one column per label
(experiments/results/host_overhead_bench.json and .md).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

import adaptive_sarathi.engine.engine as engine_module
from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.batch import ScheduledBatch, StepResult
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.input_prep import prepare_inputs
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.sampler import sample
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.engine.simulator.clock import VirtualClock
from adaptive_sarathi.engine.simulator.executor import DUMMY_TOKEN, SimulatedExecutor
from adaptive_sarathi.server.gc_tuning import YOUNG_THRESHOLD

RESULTS = Path(__file__).parent / "results" / "host_overhead_bench"
BLOCK_SIZE = 16
CONTEXT = 2048  # tokens per request, on average over the timed steps
CONTEXT_SPREAD = 64  # prompts differ by up to this many tokens either way, so block tables differ in length
STEP_TIME_S = 0.010  # what the constant latency model says every step takes
PREFILL_BUDGET = 16384  # tokens per step while the prompts prefill (untimed), to get to decoding fast
SAMPLE_VOCAB = 64
PARTS = ("snapshot", "policy", "schedule", "update", "rest")


class ConstantLatency:
    """Every step takes the same simulated time."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def step_time(self, shape: StepShape) -> float:
        return self.seconds


class TimedExecutor(SimulatedExecutor):
    """A SimulatedExecutor that records how long each execute() took on the host, and the batch."""

    last_ns = 0
    last_batch: ScheduledBatch | None = None

    def execute(self, batch: ScheduledBatch) -> StepResult:
        t0 = time.perf_counter_ns()
        result = super().execute(batch)
        self.last_ns = time.perf_counter_ns() - t0
        self.last_batch = batch
        return result


def build_engine(num_requests: int, steps: int, policy_spec: str, seed: int = 0) -> tuple[LLMEngine, TimedExecutor]:
    """An engine with `num_requests` requests all decoding, whose contexts average about CONTEXT
    tokens over the next `steps` steps."""
    rng = random.Random(seed)
    prompt_lens = [CONTEXT - steps // 2 + rng.randint(-CONTEXT_SPREAD, CONTEXT_SPREAD) for _ in range(num_requests)]
    max_tokens = steps + 64  # nobody finishes while measured
    blocks = num_requests * (-(-(max(prompt_lens) + max_tokens) // BLOCK_SIZE) + 1) + 64
    config = SchedulerConfig(name="sarathi", max_num_seqs=num_requests, max_model_len=2 * CONTEXT + 1024,
                             block_size=BLOCK_SIZE)
    scheduler = make_scheduler(config, blocks)
    clock = VirtualClock(0.0)
    executor = TimedExecutor(ConstantLatency(STEP_TIME_S), clock, blocks, BLOCK_SIZE)
    engine = LLMEngine(scheduler, executor, FixedBudget(PREFILL_BUDGET), tokenizer=None,
                       max_model_len=scheduler.max_context_len, eos_token_ids=(), clock=clock.now)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    for i, prompt_len in enumerate(prompt_lens):
        engine.add_request([DUMMY_TOKEN] * prompt_len, params, request_id=f"r{i}")
    while scheduler.num_decodes < num_requests or scheduler.num_waiting:
        engine.step()
    engine.policy = make_policy(policy_spec)
    return engine, executor


def make_policy(spec: str):
    if spec.startswith("fixed"):
        return FixedBudget(int(spec.partition(":")[2] or 512))
    from adaptive_sarathi.controller.registry import make_policy as registry_policy
    from adaptive_sarathi.controller.slo import load_slo_policy

    return registry_policy(spec, load_slo_policy("llama-3-8b-h100-strict"), seed=0)


def median_us(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1e3


def time_steps(engine: LLMEngine, executor: TimedExecutor, steps: int, warmup: int) -> tuple[float, float]:
    """Median host time of step() outside the executor, and the mean time per step spent in the
    garbage collector (it runs in some steps only), microseconds."""
    samples = []
    collecting = [0, 0]  # start of the running collection, total ns of collections while timed

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter_ns()
        else:
            collecting[1] += time.perf_counter_ns() - collecting[0]

    for i in range(warmup + steps):
        if i == warmup:
            gc.callbacks.append(on_gc)
        t0 = time.perf_counter_ns()
        outputs = engine.step()
        elapsed = time.perf_counter_ns() - t0
        assert outputs, "a timed step ran nothing"
        if i >= warmup:
            samples.append(elapsed - executor.last_ns)
    gc.callbacks.remove(on_gc)
    return median_us(samples), collecting[1] / steps / 1e3


class _Timed:
    """Wraps a callable, accumulating its host time into `totals[part]`."""

    def __init__(self, fn, totals: dict[str, int], part: str):
        self.fn, self.totals, self.part = fn, totals, part

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter_ns()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.part] += time.perf_counter_ns() - t0


def breakdown(engine: LLMEngine, executor: TimedExecutor, steps: int) -> dict[str, float]:
    """Median microseconds per step of each part in PARTS (instrumented: the wrappers add ~0.2 us
    a call, so these sum to slightly more than the uninstrumented step)."""
    totals = dict.fromkeys(PARTS, 0)
    sched, policy = engine.scheduler, engine.policy
    patched = [(sched, "schedule"), (sched, "update"), (policy, "decide"), (policy, "observe")]
    snapshot = engine_module.snapshot_state
    engine_module.snapshot_state = _Timed(snapshot, totals, "snapshot")
    sched.schedule = _Timed(sched.schedule, totals, "schedule")
    sched.update = _Timed(sched.update, totals, "update")
    policy.decide = _Timed(policy.decide, totals, "policy")
    policy.observe = _Timed(policy.observe, totals, "policy")
    samples: dict[str, list[int]] = {p: [] for p in PARTS}
    try:
        for _ in range(steps):
            for p in PARTS:
                totals[p] = 0
            t0 = time.perf_counter_ns()
            engine.step()
            total = time.perf_counter_ns() - t0 - executor.last_ns
            totals["rest"] = total - sum(totals[p] for p in PARTS if p != "rest")
            for p in PARTS:
                samples[p].append(totals[p])
    finally:
        engine_module.snapshot_state = snapshot
        for obj, name in patched:
            delattr(obj, name)  # the instance attribute shadowed the method
    return {p: median_us(samples[p]) for p in PARTS}


def time_calls(fn, calls: int, warmup: int = 20) -> float:
    """Median microseconds of fn()."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return median_us(samples)


def time_sampling(n: int, temperature: float, calls: int) -> float:
    params = [SamplingParams(max_tokens=1 << 20, temperature=temperature, top_p=0.9 if temperature else 1.0)] * n
    num_outputs = list(range(n))
    logits = torch.randn(n, SAMPLE_VOCAB, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        return time_calls(lambda: sample(logits, params, num_outputs, generator), calls)


def measure(n: int, steps: int, policy: str, smoke: bool, seed: int) -> dict[str, float]:
    warmup = 5 if smoke else 20
    engine, executor = build_engine(n, 2 * (warmup + steps) + 10, policy, seed)
    row = dict(zip(("step", "gc_mean"), time_steps(engine, executor, steps, warmup)))
    batch = executor.last_batch  # from the middle of the timed steps: contexts of about CONTEXT tokens
    row.update(breakdown(engine, executor, steps))
    assert batch is not None and all(not c.is_prefill for c in batch.chunks) and len(batch.chunks) == n
    row["prepare_inputs"] = time_calls(lambda: prepare_inputs(batch, BLOCK_SIZE), steps)
    row["sample_greedy"] = time_sampling(n, 0.0, max(steps // 4, 5))
    row["sample_temperature"] = time_sampling(n, 0.7, max(steps // 10, 3))
    row["mean_context"] = sum(c.context_len for c in batch.chunks) / n  # of the prepare_inputs batch
    return row


COLUMNS = (("step", "step() outside executor"), ("snapshot", "- state snapshot"), ("policy", "- policy"),
           ("schedule", "- schedule"), ("update", "- update"), ("rest", "- stats + outputs"),
           ("gc_mean", "garbage collection in step() (mean)"), ("prepare_inputs", "prepare_inputs"),
           ("sample_greedy", "sample() host, greedy"), ("sample_temperature", "sample() host, temperature"))


def render(results: dict, sizes: list[int]) -> str:
    """Markdown table: one row per measured part, one column per (label, size)."""
    labels = list(results["runs"])
    head = "| part (us per step, median) | " + " | ".join(f"{lab} {n}" for lab in labels for n in sizes) + " |"
    lines = [head, "|---" + "|---:" * (len(labels) * len(sizes)) + "|"]
    for key, name in COLUMNS:
        cells = []
        for lab in labels:
            for n in sizes:
                value = results["runs"][lab]["rows"].get(str(n), {}).get(key)
                cells.append("" if value is None else f"{value:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="8 requests, few steps, no results file (for CI)")
    parser.add_argument("--label", default="current", help="column name for these numbers (e.g. before, after)")
    parser.add_argument("--policy", default="fixed:512", help="budget policy while timed (fixed:N or a registry name)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per size (default 300; smoke 10)")
    parser.add_argument("--sizes", default=None, help="comma-separated request counts (default 64,128,256)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="measurements per size; each part keeps its lowest median (default 3; smoke 1)")
    parser.add_argument("--note", default="", help="how the measured code was obtained, kept with the column")
    parser.add_argument("--print-only", action="store_true", help="write no results file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tuned-gc", action="store_true",
                        help="collect young objects as the server does (adaptive_sarathi/server/gc_tuning.py's threshold; the "
                             "freeze is left out: here the requests exist before timing, in a server they arrive later)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.tuned_gc:
        gc.set_threshold(YOUNG_THRESHOLD, 50, 50)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([8] if args.smoke else [64, 128, 256])
    steps = args.steps or (10 if args.smoke else 300)
    repeats = args.repeats or (1 if args.smoke else 3)
    rows = {}
    for n in sizes:
        # On a shared host other processes inflate some medians; the lowest of several is the one
        # least disturbed.
        runs = []
        for _ in range(repeats):
            gc.collect()
            runs.append(measure(n, steps, args.policy, args.smoke, args.seed))
        rows[str(n)] = {key: min(r[key] for r in runs) for key in runs[0]}
        print(f"{n} requests: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[str(n)].items()), flush=True)
    run = {"rows": rows, "policy": args.policy, "steps": steps, "repeats": repeats, "date": str(date.today()),
           "load_average": os.getloadavg()[0], "python": platform.python_version(), "torch": torch.__version__,
           "code": str(Path(engine_module.__file__).resolve().parents[1]), "note": args.note}
    print(render({"runs": {args.label: run}}, sizes))
    if args.smoke or args.print_only:
        return
    json_path = RESULTS.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": {}}
    results["runs"][args.label] = run
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    runs = "\n".join(f"- `{lab}`: {r['date']}, policy {r['policy']}, {r['steps']} timed steps per size, lowest "
                     f"median of {r['repeats']} measurements, load "
                     f"average {r['load_average']:.1f} at the end, code from `{r['code']}`"
                     + (f": {r['note']}" if r.get("note") else "")
                     for lab, r in results["runs"].items())
    RESULTS.with_suffix(".md").write_text(
        "# Host overhead per decode step (CPU)\n\n"
        f"Machine: {cpu_name()} ({os.cpu_count()} CPUs), Python {platform.python_version()}, torch "
        f"{torch.__version__}. Produced by `python experiments/host_overhead_bench.py --label LABEL`; "
        f"see its docstring for what each row times.\n\n"
        f"Requests all decoding with contexts of about {CONTEXT} tokens (+-{CONTEXT_SPREAD}; block size "
        f"{BLOCK_SIZE}); medians, microseconds of wall time per step. The `- ` rows break `step() outside "
        f"executor` down (an instrumented pass, so they sum to a little more). Garbage collection is the "
        f"mean time per step the collector ran during the timed steps, inside whichever part it "
        f"interrupted (already counted above). sample() rows time the host part only, on logits of "
        f"vocabulary {SAMPLE_VOCAB}.\n\n"
        f"Runs:\n{runs}\n\n{render(results, sizes)}\n")
    print(f"wrote {RESULTS.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
