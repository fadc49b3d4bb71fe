"""The `adaptive-sarathi` command line: generate and chat (more subcommands register here)."""

from __future__ import annotations

import argparse
import sys

from adaptive_sarathi.engine.config import SCHEDULER_NAMES


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="HF directory, .gguf file or dummy:<arch>; default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--scheduler", default="sarathi", choices=SCHEDULER_NAMES)
    p.add_argument("--token-budget", type=int, default=512, help="most tokens one iteration processes")
    p.add_argument("--max-chunk", type=int, default=None, help="most prompt tokens per request per iteration")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-sarathi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="complete a prompt")
    gen.add_argument("prompt")
    chat = sub.add_parser("chat", help="answer a question through the model's chat template")
    chat.add_argument("question")
    chat.add_argument("--system", default=None, help="optional system message")
    for p in (gen, chat):
        _add_engine_flags(p)
        _add_sampling_flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported late so `--help` and argument errors answer without loading torch.
    from adaptive_sarathi.llm import LLM
    from adaptive_sarathi.engine.sampling_params import SamplingParams

    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                seed=args.seed)
        llm = LLM(args.model, scheduler=args.scheduler, token_budget=args.token_budget, max_chunk=args.max_chunk,
                  device=args.device, dtype=args.dtype)
        if args.command == "generate":
            out = llm.generate(args.prompt, params)[0]
        else:
            messages = ([{"role": "system", "content": args.system}] if args.system else [])
            messages.append({"role": "user", "content": args.question})
            out = llm.chat(messages, params)[0]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out.text if args.command == "chat" else args.prompt + out.text)
    t = out.timeline
    decode_s = t.finished_time - t.first_token_time
    tps = (len(out.token_ids) - 1) / decode_s if decode_s > 0 else 0.0
    print(f"[{len(out.token_ids)} tokens, finish={out.finish_reason_str}, TTFT {t.ttft * 1000:.0f} ms, "
          f"{tps:.1f} tokens/s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
