"""End-to-end throughput: the engine against Hugging Face transformers' continuous batching
(`generate_batch`) on the same requests, the same random weights and the same GPU, and both
against the workload's floor time.

Workload: the first --requests prompt lengths of a trace (default sharegpt_8k, capped at
--max-prompt tokens) with random prompt tokens (seeded) and --output-tokens outputs each, EOS
ignored, all submitted at once. Full mode: dummy:llama-3-8b in bf16 on CUDA, 128 requests of
sharegpt_8k capped at 4096 (223,895 prompt tokens) with 256 outputs each.

Floor: every prompt's prefill FLOPs at the measured matmul rate, plus 256 decode steps of all
requests in lock-step, each reading the weights once and every request's KV once, at the
measured copy bandwidth (engine/profiling/step_cost.py). No real schedule reaches it: prefill and decode
overlap in hybrid batches, which the floor counts twice, and decodes of finished prompts cannot
wait for the longest one.

Both systems get the same weights: the engine's seeded dummy weights are copied, unfused, into a
transformers LlamaForCausalLM. --smoke runs dummy:tiny in float32 on the CPU with 4 requests
and also checks that greedy outputs agree token for token, which proves the weights match.
Results: e2e_vs_transformers.{json,md} under --out (default $OUT, else experiments/results/);
smoke runs write e2e_vs_transformers_smoke.* only when --out is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.mixed_graphs import MAX_GRAPH_TOKENS
from adaptive_sarathi.engine.model.llama import LlamaForCausalLM
from adaptive_sarathi.engine.profiling.device_floors import copy_bandwidth, matmul_rate
from adaptive_sarathi.engine.profiling.profile_shapes import ProfileShape
from adaptive_sarathi.engine.profiling.profiler import device_name
from adaptive_sarathi.engine.profiling.step_cost import step_cost
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.stats import StepStats
from adaptive_sarathi.workloads.traces import load_trace, resolve_trace


@dataclass(frozen=True)
class Mode:
    model: str
    device: str
    dtype: str
    requests: int
    max_prompt: int
    output_tokens: int
    token_budget: int


FULL = Mode("dummy:llama-3-8b", "cuda", "bfloat16", 128, 4096, 256, 8192)
SMOKE = Mode("dummy:tiny", "cpu", "float32", 4, 48, 8, 64)


def workload(mode: Mode, trace: str | None, seed: int) -> list[list[int]]:
    """Prompt token lists of random ids: the trace's first prompt lengths (capped), or random
    lengths when trace is None."""
    rng = random.Random(seed)
    if trace is None:
        lengths = [rng.randint(8, mode.max_prompt) for _ in range(mode.requests)]
    else:
        lengths = [min(r.num_prompt_tokens, mode.max_prompt) for r in load_trace(resolve_trace(trace))[:mode.requests]]
    vocab = resolve_model(mode.model).config.vocab_size
    return [[rng.randrange(vocab) for _ in range(n)] for n in lengths]


def run_ours(mode: Mode, prompts: list[list[int]], seed: int) -> tuple[float, list[list[int]], LlamaForCausalLM,
                                                                      list[dict]]:
    """(seconds from submission to the last token, outputs, the model, where the time went by
    step kind) on a fresh engine."""
    args = EngineArgs(model=mode.model, device=mode.device, dtype=mode.dtype, token_budget=mode.token_budget,
                      max_num_seqs=len(prompts), max_model_len=mode.max_prompt + mode.output_tokens + 1,
                      seed=seed)
    engine = create_engine(args)
    params = SamplingParams(max_tokens=mode.output_tokens, ignore_eos=True)
    _drain(engine, [prompts[0][:32]], params)  # compiles the prefill kernels outside the timing
    stats: list[StepStats] = []
    engine.stats_listeners.append(stats.append)
    start = time.perf_counter()
    outputs = _drain(engine, prompts, params)
    elapsed = time.perf_counter() - start
    model = engine.executor.runner.model
    del engine
    _free(mode.device)
    return elapsed, outputs, model, step_breakdown(stats)


def step_breakdown(stats: list[StepStats]) -> list[dict]:
    """Steps and executor seconds (prepare, forward, sample; device synchronized) by kind of step:
    decode-only, and steps with prefill chunks up to and past MAX_GRAPH_TOKENS tokens (on a GPU
    the first two replay CUDA graphs, the last runs eagerly)."""
    kinds = {"decode-only": lambda s: not s.num_prefill_tokens,
             f"with prefill, <= {MAX_GRAPH_TOKENS} tokens": lambda s: 0 < s.num_prefill_tokens
             and s.num_tokens <= MAX_GRAPH_TOKENS,
             f"with prefill, > {MAX_GRAPH_TOKENS} tokens": lambda s: s.num_tokens > MAX_GRAPH_TOKENS}
    return [{"kind": kind, "steps": sum(map(test, stats)),
             "tokens": sum(s.num_tokens for s in stats if test(s)),
             "executor_s": sum(s.duration_s for s in stats if test(s))} for kind, test in kinds.items()]


def _drain(engine, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
    ids = [engine.add_request(p, params) for p in prompts]
    done: dict[str, list[int]] = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = list(out.token_ids)
    # No device sync needed: the executor synchronizes at the end of every step.
    return [done[i] for i in ids]


def hf_state_dict(model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face Llama names, fused projections split (views)."""
    c = model.config
    q, kv, inter = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
    out = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm.weight,
           "lm_head.weight": model.lm_head.weight}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        qw, kw, vw = layer.self_attn.qkv_proj.weight.split([q, kv, kv])
        gate, up = layer.mlp.gate_up_proj.weight.split([inter, inter])
        out.update({p + "self_attn.q_proj.weight": qw, p + "self_attn.k_proj.weight": kw,
                    p + "self_attn.v_proj.weight": vw, p + "self_attn.o_proj.weight": layer.self_attn.o_proj.weight,
                    p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                    p + "mlp.down_proj.weight": layer.mlp.down_proj.weight,
                    p + "input_layernorm.weight": layer.input_layernorm.weight,
                    p + "post_attention_layernorm.weight": layer.post_attention_layernorm.weight})
    return out


def _cpu_batching_config(prompts: list[list[int]], mode: Mode) -> dict:
    """generate_batch's cache sized to the run on a CPU: left to itself it takes 60% of the host's
    RAM (14 GiB of a 24 GiB machine) for its KV cache. Empty where transformers has no such config."""
    try:
        from transformers import ContinuousBatchingConfig
    except ImportError:
        return {}
    page = 256
    pages = sum(-(-(len(p) + mode.output_tokens) // page) for p in prompts)
    return {"continuous_batching_config": ContinuousBatchingConfig(page_size=page, num_blocks=2 * pages,
                                                                    max_batch_tokens=mode.token_budget)}


def run_transformers(mode: Mode, prompts: list[list[int]], model: LlamaForCausalLM,
                     attn: str) -> tuple[float, list[list[int]], str]:
    """(seconds, outputs, version) of transformers' generate_batch on the same weights."""
    import transformers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM as HFLlama

    c = model.config
    config = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                         num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                         max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
                         rope_theta=c.rope_theta, rope_scaling=c.rope_scaling,
                         tie_word_embeddings=c.tie_word_embeddings, attn_implementation=attn)
    param = next(model.parameters())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(param.dtype)
    try:
        with torch.device(param.device):
            hf = HFLlama(config)
    finally:
        torch.set_default_dtype(previous)
    hf.load_state_dict(hf_state_dict(model), strict=True)
    hf.eval()
    generation = GenerationConfig(max_new_tokens=mode.output_tokens, do_sample=False, eos_token_id=-1,
                                  pad_token_id=0)
    batching = _cpu_batching_config(prompts, mode) if mode.device == "cpu" else {}
    hf.generate_batch(inputs=[prompts[0][:32]], generation_config=generation, progress_bar=False,
                      **batching)  # warm-up
    _sync(mode.device)
    start = time.perf_counter()
    results = hf.generate_batch(inputs=prompts, generation_config=generation, progress_bar=False, **batching)
    _sync(mode.device)
    elapsed = time.perf_counter() - start
    # Results are keyed by request id in submission order ("req_0", ...).
    ordered = sorted(results.values(), key=lambda r: int(r.request_id.rsplit("_", 1)[-1]))
    return elapsed, [list(r.generated_tokens) for r in ordered], transformers.__version__


def floor_seconds(mode: Mode, prompts: list[list[int]], model: LlamaForCausalLM, device: torch.device,
                  smoke: bool) -> dict:
    """The workload's floor time from the card's measured copy bandwidth and matmul rate."""
    c, dtype = model.config, next(model.parameters()).dtype
    copy = copy_bandwidth(device, (8 << 20) if smoke else (1 << 30))
    mm = matmul_rate(device, dtype, 256 if smoke else 8192)
    size = dtype.itemsize
    prefill_flops = sum(step_cost(c, ProfileShape(prefill_chunks=((len(p), 0),)), size).flops for p in prompts)
    decode_bytes = 0.0
    for j in range(mode.output_tokens):
        # Step j: every request holds its prompt plus j outputs (the new token attends too).
        contexts = [len(p) + j for p in prompts]
        mean_ctx = sum(contexts) // len(contexts)
        decode_bytes += step_cost(c, ProfileShape(num_decodes=len(prompts), decode_context_len=mean_ctx), size).bytes
    return {"copy_bandwidth_bytes_per_s": copy.rate, "matmul_flops_per_s": mm.rate,
            "prefill_flops": prefill_flops, "decode_bytes": decode_bytes,
            "prefill_floor_s": prefill_flops / mm.rate, "decode_floor_s": decode_bytes / copy.rate,
            "floor_s": prefill_flops / mm.rate + decode_bytes / copy.rate}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, dummy:tiny, 4 short requests (for CI)")
    parser.add_argument("--trace", default=None,
                        help="trace name or CSV path (default sharegpt_8k; smoke: random lengths)")
    parser.add_argument("--systems", default="ours,transformers", help="comma-separated: ours, transformers")
    parser.add_argument("--token-budget", type=int, default=None, help="the engine's token budget")
    parser.add_argument("--attn", default="sdpa", help="transformers attn_implementation")
    parser.add_argument("--out", default=None, help="results folder (default $OUT, else experiments/results/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mode = SMOKE if args.smoke else FULL
    if args.token_budget:
        mode = Mode(**{**mode.__dict__, "token_budget": args.token_budget})
    if mode.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --smoke for the CPU version")
    if mode.device == "cpu":
        torch.set_num_threads(1)
    systems = set(args.systems.split(","))
    device = torch.device(mode.device)
    trace = args.trace or (None if args.smoke else "sharegpt_8k")
    prompts = workload(mode, trace, args.seed)
    prompt_tokens = sum(map(len, prompts))
    total_tokens = prompt_tokens + len(prompts) * mode.output_tokens
    print(f"e2e: {len(prompts)} requests, {prompt_tokens} prompt tokens, {mode.output_tokens} outputs each",
          flush=True)

    results: dict = {"meta": {"card": device_name(device), "torch": torch.__version__,
                              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "model": mode.model, "dtype": mode.dtype, "trace": Path(trace).stem if trace else "random lengths",
                              "requests": len(prompts), "prompt_tokens": prompt_tokens,
                              "output_tokens_each": mode.output_tokens, "token_budget": mode.token_budget,
                              "seed": args.seed, "mode": "smoke" if args.smoke else "full"}}
    ours_s, ours_out, model, steps = run_ours(mode, prompts, args.seed)
    print(f"ours: {ours_s:.2f} s", flush=True)
    results["ours_s"] = ours_s
    results["ours_steps"] = steps
    results["floor"] = floor_seconds(mode, prompts, model, device, args.smoke)
    if "transformers" in systems:
        hf_s, hf_out, version = run_transformers(mode, prompts, model, args.attn)
        print(f"transformers {version} ({args.attn}): {hf_s:.2f} s", flush=True)
        same = sum(a == b for a, b in zip(ours_out, hf_out))
        results.update(transformers_s=hf_s, transformers_version=version, attn=args.attn,
                       identical_outputs=same)
        if args.smoke and same != len(prompts):
            raise SystemExit(f"greedy outputs differ on {len(prompts) - same} of {len(prompts)} requests in float32: "
                             "the two systems do not run the same weights")
    write_report(results, total_tokens, args)


def write_report(results: dict, total_tokens: int, args: argparse.Namespace) -> None:
    floor = results["floor"]["floor_s"]
    lines = ["# End-to-end: engine vs transformers continuous batching\n",
             "\n".join(f"- {k}: {v}" for k, v in results["meta"].items()), "",
             "| system | seconds | tokens/s (prompt + output) | time / floor |", "|---|---:|---:|---:|"]
    rows = [("adaptive-sarathi (sarathi, budget %d)" % results["meta"]["token_budget"], results["ours_s"])]
    if "transformers_s" in results:
        rows.append((f"transformers {results['transformers_version']} generate_batch ({results['attn']})",
                     results["transformers_s"]))
    rows.append(("floor (prefill FLOPs at matmul rate + decode bytes at copy bandwidth)", floor))
    for name, secs in rows:
        lines.append(f"| {name} | {secs:.2f} | {total_tokens / secs:,.0f} | {secs / floor:.2f}x |")
    if "transformers_s" in results:
        lines.append(f"\nSpeed-up over transformers: **{results['transformers_s'] / results['ours_s']:.1f}x**; "
                     f"identical greedy outputs: {results['identical_outputs']} of {results['meta']['requests']} "
                     "requests (bf16 runs diverge by rounding; float32 smoke runs must agree).")
    f = results["floor"]
    lines.append(f"\nFloor parts: prefill {f['prefill_floor_s']:.2f} s ({f['prefill_flops'] / 1e15:.2f} PFLOP at "
                 f"{f['matmul_flops_per_s'] / 1e12:.0f} TFLOP/s), decode {f['decode_floor_s']:.2f} s "
                 f"({f['decode_bytes'] / 1e9:.0f} GB at {f['copy_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s).\n")
    steps = results["ours_steps"]
    lines += ["Where the engine's time went (executor = input preparation, forward and sampling, device "
              "synchronized; the rest of the wall time is scheduling and output handling):\n",
              "| steps | count | tokens | executor s |", "|---|---:|---:|---:|"]
    lines += [f"| {k['kind']} | {k['steps']} | {k['tokens']} | {k['executor_s']:.2f} |" for k in steps]
    outside = results["ours_s"] - sum(k["executor_s"] for k in steps)
    lines.append(f"| outside the executor | | | {outside:.2f} |\n")
    text = "\n".join(lines)
    print(text)
    if args.smoke and not args.out:
        return  # smoke runs keep no results unless asked
    out = Path(args.out or os.environ.get("OUT") or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    stem = "e2e_vs_transformers_smoke" if args.smoke else "e2e_vs_transformers"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (out / f"{stem}.md").write_text(text)


if __name__ == "__main__":
    main()
