"""Parse and validate OpenAI request bodies into prompts and SamplingParams.

Every refusal is an APIError 400 whose `param` names the offending field: a field the server does
not know or does not implement, a value of the wrong type or out of range, text that is not valid
Unicode (a lone UTF-16 surrogate), more prompts or longer prompts than RequestLimits allow. Beyond
the OpenAI fields, vLLM's `top_k` (int, 0 or -1 = off), `min_p` (number in [0, 1], 0 = off),
`stop_token_ids` (list of ints), `ignore_eos` (bool: generation runs to max_tokens whatever the
model samples, so benchmarks get exact output lengths), `repetition_penalty` (number in (0, 100],
1 = off) and `min_tokens` (int <= max_tokens) are accepted, and two scheduling fields:
`slo_class` (a string naming the SLO policy's request class; app.py checks the name against the
policy) and vLLM's integer `priority`, of which only 0 is accepted (see _priority). `n` samples
per prompt, `logprobs` (completions: int; chat: bool with `top_logprobs`), the presence and
frequency penalties and `response_format` (text or json_object) are OpenAI's; SamplingParams
states their semantics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from adaptive_sarathi.engine.sampling_params import MAX_LOGPROBS, SamplingParams
from adaptive_sarathi.engine.tokenizer import Tokenizer
from adaptive_sarathi.server.errors import bad_request
from adaptive_sarathi.server.fields import (INT64, RequestLimits, boolean_field, chat_messages, check_known,
                                            integer_field, is_token_id, json_object, model_field,
                                            number_field, show, show_text, text_field)

Prompt = str | list[int]

# Fields this server does not implement, and the values that ask for nothing (so clients that
# always send defaults still work).
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "echo": (None, False), "best_of": (None, 1), "suffix": (None, ""), "logit_bias": (None, {}),
    "tools": (None, []), "functions": (None, []),
    "function_call": (None, "none"), "tool_choice": (None, "none"), "parallel_tool_calls": (None,),
}
# What to say instead of "leave it out" where a client may expect the field to work.
_UNSUPPORTED_HINTS = {
    "best_of": "only best_of=1 is supported: use 'n' for several samples and pick among them",
}
_FIELDS = {"model", "n", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
           "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "slo_class", "priority",
           "presence_penalty", "frequency_penalty", "repetition_penalty", "min_tokens", "logprobs",
           "response_format", "user"}  # `user` only labels the request for the caller's own bookkeeping
_COMPLETION_FIELDS = _FIELDS | {"prompt"}
_CHAT_FIELDS = _FIELDS | {"messages", "top_logprobs"}
_COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
_MAX_STOPS = 16



@dataclass(frozen=True)
class GenerateRequest:
    """A validated completions or chat body: one engine request per prompt."""

    chat: bool
    model: str | None
    prompts: list[Prompt]
    params: SamplingParams
    stream: bool
    include_usage: bool
    max_tokens_field: str | None = None  # the field that set max_tokens; None: the default applies
    slo_class: str | None = None  # the body's `slo_class`, unchecked against any policy; None: not given
    n: int = 1  # samples per prompt: choice prompt_index * n + i is sample i of that prompt
    continuous_usage: bool = False  # usage so far on every chunk (stream_options.continuous_usage_stats)

    def sample_params(self) -> list[SamplingParams]:
        """The params of the n samples of one prompt: sample i is seeded seed + i when a seed is
        given (so the samples differ and each is reproducible), else all share `params`."""
        if self.params.seed is None or self.n == 1:
            return [self.params] * self.n
        return [dataclasses.replace(self.params, seed=self.params.seed + i) for i in range(self.n)]

    @property
    def max_tokens_given(self) -> bool:
        return self.max_tokens_field is not None


def parse_completion_request(body: Any, max_model_len: int,
                             limits: RequestLimits = RequestLimits()) -> GenerateRequest:
    """A /v1/completions body. `prompt` is a string, a list of strings, a list of token ids or a
    list of token-id lists; each prompt becomes one choice."""
    body = json_object(body)
    check_known(body, _COMPLETION_FIELDS, _UNSUPPORTED)
    return _parse(body, _prompts(body, limits), chat=False, max_model_len=max_model_len, limits=limits)


def parse_chat_request(body: Any, tokenizer: Tokenizer | None, max_model_len: int,
                       limits: RequestLimits = RequestLimits()) -> GenerateRequest:
    """A /v1/chat/completions body; `messages` are rendered through the model's chat template."""
    body = json_object(body)
    check_known(body, _CHAT_FIELDS, _UNSUPPORTED)
    messages = chat_messages(body, limits)
    request = _parse(body, [], chat=True, max_model_len=max_model_len, limits=limits)
    if tokenizer is None:
        raise bad_request("messages", "'messages' need a chat template and this model has no tokenizer: "
                                      "send token ids to /v1/completions")
    try:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except ValueError as err:
        raise bad_request("messages", str(err)) from None
    return dataclasses.replace(request, prompts=[prompt])


def _parse(body: dict, prompts: list[Prompt], chat: bool, max_model_len: int,
           limits: RequestLimits = RequestLimits()) -> GenerateRequest:
    for name, harmless in _UNSUPPORTED.items():
        value = body.get(name)
        # By type too: true == 1 and 0 == False, but `best_of: true` asks for nothing sensible.
        if not any(value == h and type(value) is type(h) for h in harmless):
            raise bad_request(name, f"'{name}' is not supported by this server: "
                                    f"{_UNSUPPORTED_HINTS.get(name, 'leave it out')}")
    if not isinstance(body.get("user", ""), str):
        raise bad_request("user", "'user' must be a string")
    model = model_field(body)
    n = integer_field(body, "n", low=1, high=limits.max_prompts)
    n = 1 if n is None else n
    num_prompts = max(len(prompts), 1)  # chat: one prompt, rendered later
    if n * num_prompts > limits.max_prompts:
        raise bad_request("n", f"n={n} samples of {num_prompts} prompts make {n * num_prompts} sequences, more "
                               f"than the limit of {limits.max_prompts} per request (--max-prompts-per-request): "
                               "ask for fewer")
    stream = boolean_field(body, "stream", False)
    include_usage, continuous_usage = _stream_options(body, stream)
    max_tokens_field = max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):  # both checked; the newer name wins
        value = integer_field(body, name, low=1)
        if value is not None:
            if value >= max_model_len:
                raise bad_request(name, f"'{name}'={value} exceeds the context window of {max_model_len} "
                                        f"tokens: ask for at most {max_model_len - 1}")
            max_tokens_field, max_tokens = name, value
    if max_tokens is None:
        # Chat runs to the end of the context window by default, as OpenAI's does.
        max_tokens = max_model_len if chat else _COMPLETION_DEFAULT_MAX_TOKENS
    temperature = number_field(body, "temperature", 0.0, 2.0, default=1.0)
    top_p = number_field(body, "top_p", 0.0, 1.0, default=1.0, low_open=True)
    top_k = integer_field(body, "top_k", low=-1, high=INT64 - 1)
    params = SamplingParams(
        max_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
        top_k=0 if top_k is None else top_k, min_p=float(number_field(body, "min_p", 0.0, 1.0, default=0.0)),
        seed=integer_field(body, "seed", low=-INT64, high=INT64 - 1),
        stop=_stop(body), stop_token_ids=_stop_token_ids(body), ignore_eos=boolean_field(body, "ignore_eos", False),
        presence_penalty=float(number_field(body, "presence_penalty", -2.0, 2.0, default=0.0)),
        frequency_penalty=float(number_field(body, "frequency_penalty", -2.0, 2.0, default=0.0)),
        repetition_penalty=float(number_field(body, "repetition_penalty", 0.0, 100.0, default=1.0, low_open=True)),
        min_tokens=_min_tokens(body, max_tokens), logprobs=_chat_logprobs(body) if chat else _completion_logprobs(body),
        json_object=_json_object(body))
    _priority(body)
    return GenerateRequest(chat=chat, model=model, prompts=prompts, params=params, stream=stream,
                           include_usage=include_usage, continuous_usage=continuous_usage,
                           max_tokens_field=max_tokens_field,
                           slo_class=_slo_class(body), n=n)


def _json_object(body: dict) -> bool:
    """`response_format`: {"type": "text"} (the default) or {"type": "json_object"} (JSON mode)."""
    value = body.get("response_format")
    if value is None:
        return False
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(value, dict) or set(value) != {"type"} or kind not in ("text", "json_object"):
        shown = kind if isinstance(kind, str) else show(value)
        raise bad_request("response_format", f"response_format {show_text(shown)} is not supported: send "
                                             "{\"type\": \"json_object\"} for JSON mode or {\"type\": \"text\"} "
                                             "(JSON schemas are not implemented)")
    return kind == "json_object"


def _min_tokens(body: dict, max_tokens: int) -> int:
    value = integer_field(body, "min_tokens", low=0)
    if value is not None and value > max_tokens:
        raise bad_request("min_tokens", f"'min_tokens'={value} exceeds max_tokens={max_tokens}: ask for at most "
                                        "max_tokens, or raise max_tokens")
    return value or 0


def _completion_logprobs(body: dict) -> int | None:
    """Completions' `logprobs`: how many alternatives to list per token (0 = the chosen token's only)."""
    return integer_field(body, "logprobs", low=0, high=MAX_LOGPROBS)


def _chat_logprobs(body: dict) -> int | None:
    """Chat's `logprobs` (true: the chosen tokens' logprobs) and `top_logprobs` (alternatives per
    token, which need `logprobs` true, as OpenAI has it)."""
    wanted = boolean_field(body, "logprobs", False)
    top = integer_field(body, "top_logprobs", low=0, high=MAX_LOGPROBS)
    if top is not None and not wanted:
        raise bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true: send both, or neither")
    return (top or 0) if wanted else None


def _slo_class(body: dict) -> str | None:
    value = body.get("slo_class")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise bad_request("slo_class", f"'slo_class' must be the name of a class of the server's SLO policy "
                                       f"(a non-empty string), got {show(value)}")
    return text_field(value, "slo_class")


def _priority(body: dict) -> None:
    """vLLM's `priority` (lower = served sooner, under its priority scheduling policy) is not
    implemented: like vLLM without that policy, only the default 0 is accepted."""
    value = integer_field(body, "priority", low=-INT64, high=INT64 - 1)
    if value not in (None, 0):
        raise bad_request("priority", f"priority={value} is not implemented: this server does not order requests "
                                      "by priority; send 0 or leave it out, and choose an SLO class with "
                                      "'slo_class' or the x-slo-class header instead")



def _prompts(body: dict, limits: RequestLimits) -> list[Prompt]:
    if "prompt" not in body:
        raise bad_request("prompt", "'prompt' is required: a string, a list of strings or token ids")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [text_field(prompt, "prompt", limits)]
    if isinstance(prompt, list) and prompt:
        if all(is_token_id(t) for t in prompt):
            return [prompt]
        if len(prompt) > limits.max_prompts:
            raise bad_request("prompt", f"'prompt' holds {len(prompt)} prompts, more than the limit of "
                                        f"{limits.max_prompts} per request (--max-prompts-per-request): "
                                        "split them over several requests")
        if all(isinstance(p, str) for p in prompt):
            return [text_field(p, f"prompt[{i}]", limits) for i, p in enumerate(prompt)]
        if all(isinstance(p, list) and p and all(is_token_id(t) for t in p) for p in prompt):
            return list(prompt)
    raise bad_request("prompt", "'prompt' must be a string, a non-empty list of strings, a non-empty "
                                "list of token ids or a list of such lists")




_STREAM_OPTIONS = ("include_usage", "continuous_usage_stats")


def _stream_options(body: dict, stream: bool) -> tuple[bool, bool]:
    """`stream_options`: (include_usage, continuous_usage). OpenAI's `include_usage` adds a last
    chunk with the token counts; vLLM's `continuous_usage_stats` (which load generators such as
    guidellm and aiperf send) puts the counts so far on every chunk too, and, as in vLLM, only
    together with `include_usage`. Any other key is a 400 naming it."""
    options = body.get("stream_options")
    if options is None:
        return False, False
    if not isinstance(options, dict):
        raise bad_request("stream_options", "'stream_options' must be an object such as {\"include_usage\": true}")
    if not stream:
        raise bad_request("stream_options", "'stream_options' is only allowed when 'stream' is true")
    unknown = [show_text(str(key)) for key in options if key not in _STREAM_OPTIONS]
    if unknown:
        raise bad_request("stream_options", f"stream_options {', '.join(repr(k) for k in unknown)} "
                                            f"{'is' if len(unknown) == 1 else 'are'} not supported: leave "
                                            f"{'it' if len(unknown) == 1 else 'them'} out (known: "
                                            f"{', '.join(_STREAM_OPTIONS)})")
    flags = []
    for key in _STREAM_OPTIONS:
        value = options.get(key, False)
        if not isinstance(value, bool):
            raise bad_request("stream_options", f"'stream_options.{key}' must be true or false")
        flags.append(value)
    include, continuous = flags
    return include, include and continuous


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop", "'stop' must be a non-empty string or a list of them")
    if len(stops) > _MAX_STOPS or any(len(s) > 1000 for s in stops):
        raise bad_request("stop", f"'stop' allows at most {_MAX_STOPS} strings of at most 1000 characters")
    return tuple(text_field(s, "stop") for s in stops)


def _stop_token_ids(body: dict) -> tuple[int, ...]:
    ids = body.get("stop_token_ids")
    if ids is None:
        return ()
    if not isinstance(ids, list) or len(ids) > 1024 or not all(is_token_id(t) for t in ids):
        raise bad_request("stop_token_ids", "'stop_token_ids' must be a list of at most 1024 token ids "
                                            "(integers >= 0)")
    return tuple(ids)





