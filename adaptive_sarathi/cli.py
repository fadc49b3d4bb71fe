"""The `adaptive-sarathi` command line: generate, chat, serve (an OpenAI-compatible server),
bench (a load generator against any OpenAI-compatible server), tokenizer-path (the model's
tokenizer as a directory for clients), profile (step latencies), and the
simulator's simulate, capacity and tune (offline Optuna tuning; see sim_cli)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from adaptive_sarathi import exit_codes
from adaptive_sarathi.version import package_version
from adaptive_sarathi.engine.config import SCHEDULER_NAMES
from adaptive_sarathi.engine.latency.profile import FORMS, TOKEN_KNOTS
from adaptive_sarathi.engine.latency.from_step_log import DURATIONS
from adaptive_sarathi.sim_cli import SIMULATION_COMMANDS, add_simulation_commands, run_simulation_command


_DESCRIPTION = ("An SLO-aware LLM server: chunked prefills under a per-step token budget that a controller "
                "retunes to hold the declared TTFT and TBT targets. Each command has its own --help.")


class _SubcommandParser(argparse.ArgumentParser):
    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="HF directory, .gguf file or dummy:<arch>; default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--scheduler", default="sarathi", choices=SCHEDULER_NAMES)
    p.add_argument("--token-budget", "--max-num-batched-tokens", type=int, default=512,
                   help="most tokens one iteration processes (vLLM's --max-num-batched-tokens)")
    p.add_argument("--max-chunk", type=int, default=None, help="most prompt tokens per request per iteration")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU when there is one)")
    p.add_argument("--dtype", default="auto", help="float16, bfloat16, float32 or auto (the model's)")
    p.add_argument("--enforce-eager", action="store_true",
                   help="run every step eagerly instead of replaying CUDA graphs (GPU only)")
    p.add_argument("--enable-prefix-caching", dest="enable_prefix_caching", action="store_true", default=True,
                   help="reuse the KV blocks of prompt prefixes other requests computed (on by default; vLLM's "
                        "flag, accepted)")
    p.add_argument("--no-prefix-caching", "--no-enable-prefix-caching", dest="enable_prefix_caching",
                   action="store_false", help="compute every prompt in full (turns prefix caching off)")
    _add_threads_flag(p)


def _add_threads_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-threads", type=int, default=None,
                   help="torch threads of a CPU engine (default: 1 on hosts of up to 4 CPUs, else half the "
                        "CPUs, at most 4)")


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                   help="the model, as vLLM's `serve MODEL` takes it (the same as --model)")
    p.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="names requests call the model by; the first one is shown in responses and /v1/models "
                        "(default: the model's own name)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="Hugging Face tokenizer directory to use instead of the model's own (default: the model's; "
                        "`adaptive-sarathi tokenizer-path` prints the model's as such a directory, for clients)")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="Jinja chat template file (or the template text) replacing the tokenizer's (default: the "
                        "tokenizer's own)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="fraction of the GPU's memory the engine may use, weights and KV cache together")
    p.add_argument("--enable-chunked-prefill", action="store_true",
                   help="accepted for vLLM command lines: prefills are always chunked here")
    p.add_argument("--disable-log-requests", action="store_true",
                   help="accepted for vLLM command lines: requests are never logged here")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--max-num-seqs", type=int, default=256, help="most requests in the running batch")
    p.add_argument("--max-model-len", type=int, default=None, help="context window (default: the model's)")
    p.add_argument("--num-kv-blocks", type=int, default=None, help="KV cache blocks (default: sized to memory)")
    p.add_argument("--block-size", type=int, default=16, help="KV cache block size in tokens")
    p.add_argument("--max-waiting", type=int, default=256,
                   help="most requests waiting for admission; beyond it requests get 429 (0: no limit)")
    p.add_argument("--max-prompts-per-request", type=int, default=64,
                   help="most prompts in one completions body (or messages in one chat); beyond it 400")
    p.add_argument("--max-prompt-chars", type=int, default=200_000,
                   help="most characters in one text prompt or chat message; beyond it 400")
    # The default is read at start-up, not here: --help would print the key.
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer <key>' on /v1 routes (unset: $ADAPTIVE_SARATHI_API_KEY)")
    c = p.add_argument_group("CORS (off unless --allowed-origins is given)")
    c.add_argument("--allowed-origins", type=_string_list, default=[], metavar="JSON_LIST",
                   help='browser origins allowed to call the API, as vLLM takes them: a JSON list such as '
                        '\'["https://app.example"]\' (or one origin); \'["*"]\' allows any')
    c.add_argument("--allowed-methods", type=_string_list, default=["*"], metavar="JSON_LIST",
                   help="HTTP methods allowed cross-origin")
    c.add_argument("--allowed-headers", type=_string_list, default=["*"], metavar="JSON_LIST",
                   help="request headers allowed cross-origin")
    c.add_argument("--allow-credentials", action="store_true",
                   help="let browsers send credentials (cookies, Authorization) cross-origin")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the engine's random draws for requests that send no seed of their own")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds in-flight requests may finish after SIGTERM before they are aborted")
    p.add_argument("--policy", default=None, help="budget policy: fixed:<budget>[:<chunk>][:edf], adaptive, "
                   "two_level[:<low>:<high>], slack (default: fixed at --token-budget/--max-chunk)")
    p.add_argument("--slo-policy", default=None, help="SLO policy YAML, or the name of a shipped one")
    p.add_argument("--slo", default=None, help="SLO shorthand ttft:MS,tbt:MS (each optionally @pNN)")
    p.add_argument("--profile", default=None, help="latency profile CSV of this GPU and model: the prior of "
                   "the adaptive and slack policies")
    p.add_argument("--policy-seed", default=None, help="seed file from `adaptive-sarathi tune`: --policy adaptive "
                   "starts from its entry for --seed-gpu/--seed-model (defaults when none matches)")
    p.add_argument("--seed-gpu", default=None, help="GPU name to look up in --policy-seed (default: any)")
    p.add_argument("--seed-model", default=None, help="model name to look up in --policy-seed (default: any)")
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="split the model over this many GPUs of this host (CPU: processes over gloo)")
    p.add_argument("--step-log", default=None, help="write one JSON line per engine step to this file "
                   "(overwritten), for `adaptive-sarathi profile --from-stats`")
    r = p.add_argument_group("replicas on Ray Serve (docs/replicas.md; needs the `replicas` extra)")
    r.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="serve N engine replicas on Ray Serve behind one ingress on --host/--port")
    r.add_argument("--routing", default="headroom", choices=("round_robin", "least_outstanding", "headroom"),
                   help="how the ingress places requests (default headroom: where the forecast TTFT has the most "
                        "slack under the class's target; 429 when none can meet it)")
    r.add_argument("--gpus-per-replica", type=float, default=None,
                   help="GPUs Ray reserves per replica (default: --tensor-parallel-size on a GPU, 0 on a CPU); "
                        "0.5 puts two replicas on one GPU (lower --gpu-memory-utilization to match)")
    r.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")


def _string_list(text: str) -> list[str]:
    """A flag value that is a JSON list of strings (vLLM's form), or one plain string."""
    if not text.lstrip().startswith("["):
        return [text]
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a JSON list ({err}): write it as '[\"a\", \"b\"]'") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise argparse.ArgumentTypeError("use a JSON list of strings, such as '[\"a\", \"b\"]'")
    return value


def _add_bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server, without /v1")
    p.add_argument("--model", default=None, help="model name to request (default: the server's first)")
    p.add_argument("--api-key", default=None)
    w = p.add_argument_group("workload (drawn as simulate draws it: the same flags and --seed send the same "
                             "requests)")
    w.add_argument("--trace", default=None,
                   help="CSV with num_prefill_tokens,num_decode_tokens per row, or a name in ../shared/traces "
                        "(default: fixed synthetic lengths)")
    w.add_argument("--workload", default=None,
                   help="phased workload YAML, or the name of an example in examples/workloads, as simulate reads")
    w.add_argument("--input-len", type=int, default=None, help="prompt tokens of synthetic requests (default 128)")
    w.add_argument("--output-len", type=int, default=None, help="output tokens of synthetic requests (default 32)")
    w.add_argument("--max-total-len", type=int, default=None,
                   help="with --trace: leave out rows whose prompt + output exceed this many tokens (as simulate "
                        "does)")
    w.add_argument("--vocab-size", type=int, default=None,
                   help="with --prompts token-ids: ids are drawn from [0, vocab-size) (default 500); keep it within "
                        "the model's vocabulary")
    w.add_argument("--num-requests", type=int, default=None, help="requests without --workload (default 100)")
    w.add_argument("--qps", type=float, default=None,
                   help="mean request rate without --workload (default inf: all at once)")
    w.add_argument("--burstiness", type=float, default=None,
                   help="gamma shape of inter-arrival times: 1 = Poisson (default), < 1 burstier, > 1 more regular "
                        "(simulate's --cv = burstiness^-1/2)")
    w.add_argument("--seed", type=int, default=0, help="seed of arrivals, lengths and prompt token ids")
    p.add_argument("--endpoint", choices=("completions", "chat"), default="completions",
                   help="the API to load: /v1/completions, or /v1/chat/completions with the prompt as the user "
                        "message (the chat template's tokens count in its length)")
    p.add_argument("--prompts", choices=("text", "token-ids"), default="text",
                   help="text of the drawn token lengths, built from --tokenizer; or random token ids "
                        "(completions only, for servers without a tokenizer)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="Hugging Face tokenizer directory (tokenizer.json) of the served model, for text prompts "
                        "(default: the embedded SmolLM2's)")
    p.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                   help="vLLM's goodput: requests per second that succeed within every target given, KEY among "
                        "ttft, tpot, e2el (e.g. --goodput ttft:500 tpot:50)")
    p.add_argument("--max-concurrency", type=int, default=None, help="most requests in flight at once")
    p.add_argument("--slo", default=None,
                   help="targets in ms, each optionally @pNN (default p99), e.g. ttft:2000@p90,tbt:65 (keys: ttft, "
                        "tbt, tpot, e2el); reports each at its percentile (TBT over every token gap) and goodput")
    p.add_argument("--slo-policy", default=None, help="SLO policy YAML, or the name of a shipped one: its TTFT and "
                                                      "TBT targets, as --slo")
    p.add_argument("--slo-class", default=None, metavar="NAME",
                   help="the SLO class every request names (sent as the x-slo-class header; the server must run "
                        "with an SLO policy that declares it), recorded per request in --json")
    p.add_argument("--json", default=None, help="write the summary and every request (arrival, lengths, timings) "
                                                "to this file; simulate --replay FILE serves the same requests")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_profile_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="dummy:llama-3-8b", help="HF directory, .gguf file or dummy:<arch>")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", default="profile.csv", help="the latency-profile CSV to write")
    p.add_argument("--grid", default="quick", choices=("quick", "full"), help="which step shapes to time")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per shape (the median is kept)")
    p.add_argument("--block-size", type=int, default=16, help="KV cache block size in tokens")
    p.add_argument("--attention-backend", default="auto", help="as for serve: the backend the profile describes")
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="split the model over this many GPUs of this host (CPU: processes over gloo)")
    _add_threads_flag(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--from-stats", default=None, metavar="STEP_LOG",
                   help="fit the profile from the step log of a served run (serve --step-log) instead of timing "
                        "a grid; the model and device flags are then unused")
    p.add_argument("--fit-duration", default="period", choices=DURATIONS,
                   help="with --from-stats, what the profile learns: the step period, host work between steps "
                        "included, which the simulator needs for token gaps (default); or the executor's time alone")
    p.add_argument("--form", default=TOKEN_KNOTS, choices=tuple(FORMS),
                   help="with --from-stats, the profile's interpolation (engine/latency/profile.py)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-sarathi", description=_DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    # Every subcommand shows its defaults, and takes only whole flag names: a prefix such as --seed
    # would otherwise match --seed-gpu on one command and be a different flag on another.
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubcommandParser)
    gen = sub.add_parser("generate", help="complete a prompt")
    gen.add_argument("prompt")
    chat = sub.add_parser("chat", help="answer a question through the model's chat template")
    chat.add_argument("question")
    chat.add_argument("--system", default=None, help="optional system message")
    for p in (gen, chat):
        _add_engine_flags(p)
        _add_sampling_flags(p)
    serve = sub.add_parser("serve", help="serve the OpenAI API (completions, chat completions) over HTTP")
    _add_engine_flags(serve)
    _add_serve_flags(serve)
    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible server and report latencies")
    _add_bench_flags(bench)
    tok = sub.add_parser("tokenizer-path", help="print a Hugging Face tokenizer directory of the model (written "
                         "once), for clients' and load generators' --tokenizer")
    tok.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                     help="the model, as serve takes it (default: the embedded SmolLM2-135M-Instruct)")
    tok.add_argument("--model", default=None, help="the same as MODEL")
    tok.add_argument("--tokenizer", default=None, metavar="DIR",
                     help="as serve's: a tokenizer directory the server uses instead of the model's")
    tok.add_argument("--chat-template", default=None, metavar="FILE",
                     help="as serve's: the chat template file (or text) the server uses")
    profile = sub.add_parser("profile", help="time model steps over a grid of shapes, or fit a served run's step "
                             "log (--from-stats); write a latency-profile CSV")
    _add_profile_flags(profile)
    add_simulation_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (adaptive_sarathi.exit_codes)."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "profile":
        return _profile(args)
    if args.command == "tokenizer-path":
        return _tokenizer_path(args)
    if args.command in SIMULATION_COMMANDS:
        return run_simulation_command(args)
    return _generate(args)


def _serve_engine_args(args: argparse.Namespace):
    """The EngineArgs of `serve`'s flags. Raises ValueError naming a bad flag."""
    from adaptive_sarathi.engine.factory import EngineArgs

    if args.model_tag is not None and args.model is not None and args.model_tag != args.model:
        raise ValueError(f"serve {args.model_tag} --model {args.model}: name the model once")
    return EngineArgs(model=args.model_tag or args.model, scheduler=args.scheduler, token_budget=args.token_budget,
                      max_chunk=args.max_chunk, max_num_seqs=args.max_num_seqs,
                      max_model_len=args.max_model_len, num_kv_blocks=args.num_kv_blocks, block_size=args.block_size,
                      tensor_parallel_size=args.tensor_parallel_size,
                      device=args.device, dtype=args.dtype, enforce_eager=args.enforce_eager,
                      num_threads=args.num_threads, gpu_memory_utilization=args.gpu_memory_utilization,
                      seed=args.seed, enable_prefix_caching=args.enable_prefix_caching,
                      tokenizer=args.tokenizer, chat_template=args.chat_template)


def _serve(args: argparse.Namespace) -> int:
    from adaptive_sarathi.server import ServerArgs, run_server
    from adaptive_sarathi.server.cors import CORSConfig

    try:
        engine_args = _serve_engine_args(args)
        slo = _serve_slo(args)  # read once: the budget policy serves it, requests name its classes
        api_key = args.api_key if args.api_key is not None else os.environ.get("ADAPTIVE_SARATHI_API_KEY")
        server_args = ServerArgs(host=args.host, port=args.port, api_key=api_key,
                                 max_waiting=args.max_waiting or None, shutdown_timeout_s=args.shutdown_timeout,
                                 max_prompts_per_request=args.max_prompts_per_request,
                                 max_prompt_chars=args.max_prompt_chars, step_log=args.step_log, slo=slo,
                                 served_model_names=tuple(args.served_model_name or ()),
                                 cors=CORSConfig(tuple(args.allowed_origins), tuple(args.allowed_methods),
                                                 tuple(args.allowed_headers), args.allow_credentials))
        if args.replicas is not None:
            return _serve_replicas(args, engine_args, server_args)
        return run_server(engine_args, server_args, _serve_policy(args, slo))
    except ValueError as err:  # bad flags and ModelLoadError
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE


def _serve_replicas(args: argparse.Namespace, engine_args, server_args) -> int:
    """`serve --replicas N`: each replica builds its own budget policy from the same flags."""
    from adaptive_sarathi.replicas import ReplicaConfig, serve_replicas

    if args.step_log is not None:
        raise ValueError("--step-log is per engine: it is not available with --replicas")
    _serve_policy(args, server_args.slo)  # the flags are checked here, before Ray starts
    params = None
    if args.policy_seed is not None:
        from adaptive_sarathi.controller.seed_store import seed_params

        params = seed_params(args.policy_seed, args.seed_gpu, args.seed_model, args.tensor_parallel_size)
    config = ReplicaConfig(engine_args, server_args, num_replicas=args.replicas, routing=args.routing,
                           policy=args.policy, policy_profile=args.profile, policy_params=params,
                           num_gpus_per_replica=args.gpus_per_replica, ray_address=args.ray_address)
    return serve_replicas(config)


def _serve_slo(args: argparse.Namespace):
    """The SLO policy of `serve`'s --slo/--slo-policy, or None. Raises ValueError naming the flag."""
    from adaptive_sarathi.controller.slo import slo_from_flags

    if args.policy is None and (args.slo is not None or args.slo_policy is not None):
        raise ValueError("--slo and --slo-policy need --policy (e.g. --policy adaptive)")
    return slo_from_flags(args.slo, args.slo_policy)


def _serve_policy(args: argparse.Namespace, slo=None):
    """The budget policy `serve` was asked for, or None for the fixed --token-budget. `slo`: the
    SLO policy _serve_slo read (None: read it from the flags)."""
    if args.policy is None:
        if (args.slo is not None or args.slo_policy is not None or args.profile is not None
                or args.policy_seed is not None):
            raise ValueError("--slo, --slo-policy, --profile and --policy-seed need --policy (e.g. --policy adaptive)")
        return None
    from adaptive_sarathi.controller.registry import make_policy
    from adaptive_sarathi.engine.latency.profile import load_profile

    prior = load_profile(args.profile) if args.profile is not None else None
    params = None
    if args.policy_seed is not None:
        from adaptive_sarathi.controller.seed_store import seed_params

        params = seed_params(args.policy_seed, args.seed_gpu, args.seed_model, args.tensor_parallel_size)
        if params is None:
            print(f"note: {args.policy_seed} has no adaptive entry for this deployment: default hyperparameters",
                  file=sys.stderr)
    return make_policy(args.policy, slo if slo is not None else _serve_slo(args), prior=prior, params=params)


def _tokenizer_path(args: argparse.Namespace) -> int:
    """Print the tokenizer directory a server of the same MODEL/--tokenizer/--chat-template
    flags tokenizes with, written as a plain Hugging Face tokenizer directory."""
    from adaptive_sarathi.engine.loaders import resolve_model
    from adaptive_sarathi.engine.loaders.tokenizer_export import export_tokenizer, export_tokenizer_dir
    from adaptive_sarathi.engine.tokenizer import resolve_chat_template

    try:
        if args.model_tag is not None and args.model is not None and args.model_tag != args.model:
            raise ValueError(f"tokenizer-path {args.model_tag} --model {args.model}: name the model once")
        template = resolve_chat_template(args.chat_template) if args.chat_template is not None else None
        if args.tokenizer is not None:
            path = export_tokenizer_dir(Path(args.tokenizer).expanduser(), Path(args.tokenizer).name, template)
        else:
            path = export_tokenizer(resolve_model(args.model_tag or args.model), template)
    except ValueError as err:  # ModelLoadError included
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE
    print(path)
    return exit_codes.OK


def _bench(args: argparse.Namespace) -> int:
    from adaptive_sarathi.bench import run_benchmark_cli

    try:
        config = bench_config(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE
    return run_benchmark_cli(config)


def bench_config(args: argparse.Namespace):
    """The BenchConfig of `bench`'s flags. Raises ValueError naming a bad flag."""
    from adaptive_sarathi.bench import BenchConfig
    from adaptive_sarathi.bench.slo import parse_goodput, slo_from_flags

    return BenchConfig(
        base_url=args.base_url, model=args.model, api_key=args.api_key, trace=args.trace, workload=args.workload,
        input_len=args.input_len, output_len=args.output_len, max_total_len=args.max_total_len,
        vocab_size=args.vocab_size, num_requests=args.num_requests, qps=args.qps,
        burstiness=args.burstiness, max_concurrency=args.max_concurrency, seed=args.seed,
        slo=slo_from_flags(args.slo, args.slo_policy), json_path=args.json, progress=not args.no_progress,
        slo_class=args.slo_class, endpoint=args.endpoint, prompts=args.prompts, tokenizer=args.tokenizer,
        goodput=parse_goodput(args.goodput or ()))


def _profile(args: argparse.Namespace) -> int:
    if args.from_stats is not None:
        return _profile_from_stats(args)
    from adaptive_sarathi.engine.profiling.profiler import ProfileConfig, run_profile

    try:
        if args.num_threads is not None:
            if args.num_threads < 1:
                raise ValueError(f"--num-threads={args.num_threads} is invalid: use an integer >= 1")
            import torch

            torch.set_num_threads(args.num_threads)
        config = ProfileConfig(model=args.model, device=args.device, dtype=args.dtype, out=args.out, grid=args.grid,
                               repeats=args.repeats, block_size=args.block_size,
                               attention_backend=args.attention_backend,
                               tensor_parallel_size=args.tensor_parallel_size)
        summary = run_profile(config, progress=not args.no_progress)
    except ValueError as err:  # bad flags and ModelLoadError
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE
    print(f"wrote {summary.num_rows} rows to {summary.path} in {summary.elapsed_s:.0f} s; "
          f"skipped {len(summary.skipped)} shapes", file=sys.stderr)
    for shape, reason in summary.skipped:
        print(f"  skipped {shape}: {reason}", file=sys.stderr)
    return exit_codes.OK


def _profile_from_stats(args: argparse.Namespace) -> int:
    from adaptive_sarathi.engine.latency.from_step_log import fit_step_log, write_fit
    from adaptive_sarathi.engine.step_log import read_step_log

    try:
        log = read_step_log(args.from_stats)
        fit = fit_step_log(log, duration=args.fit_duration, form=args.form, source=args.from_stats)
        write_fit(fit, args.out)
    except FileNotFoundError:
        print(f"error: --from-stats {args.from_stats}: no such file (record one with serve --step-log)",
              file=sys.stderr)
        return exit_codes.USAGE
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE
    print(f"wrote {len(fit.rows)} steps ({args.fit_duration}) to {args.out}"
          + (f"; left out {fit.num_without_period} steps without a period" if fit.num_without_period else ""))
    print(f"covers {fit.model.tags['covers']} (beyond that, predictions are extrapolations)")
    print(f"fit error, fitted steps: {fit.error}")
    print(f"fit error, held-out steps: {fit.holdout_error if fit.holdout_error is not None else 'too few steps'}")
    return exit_codes.OK


def _generate(args: argparse.Namespace) -> int:
    # Imported late so `--help` and argument errors answer without loading torch.
    from adaptive_sarathi.llm import LLM
    from adaptive_sarathi.engine.sampling_params import SamplingParams

    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                seed=args.seed)
        llm = LLM(args.model, scheduler=args.scheduler, token_budget=args.token_budget, max_chunk=args.max_chunk,
                  device=args.device, dtype=args.dtype, enforce_eager=args.enforce_eager,
                  num_threads=args.num_threads, enable_prefix_caching=args.enable_prefix_caching)
        if args.command == "generate":
            out = llm.generate(args.prompt, params)[0]
        else:
            messages = ([{"role": "system", "content": args.system}] if args.system else [])
            messages.append({"role": "user", "content": args.question})
            out = llm.chat(messages, params)[0]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.USAGE
    print(out.text if args.command == "chat" else args.prompt + out.text)
    t = out.timeline
    decode_s = t.finished_time - t.first_token_time
    tps = (len(out.token_ids) - 1) / decode_s if decode_s > 0 else 0.0
    print(f"[{len(out.token_ids)} tokens, finish={out.finish_reason_str}, TTFT {t.ttft * 1000:.0f} ms, "
          f"{tps:.1f} tokens/s]", file=sys.stderr)
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
